// The key list of one attention query (attention.cu, attention_tc.cu): its window positions
// max(0, t - W + 1) .. t, then its compressed entries (the selected ones, or all visible ones).
#pragma once

#include "cuda/kernels.h"

namespace longctx::cuda {

struct RowKeys {
  int32_t pos;
  int32_t first;      // first window position
  int n_window;
  int64_t n_keys;
};

__device__ __forceinline__ RowKeys row_keys(const KvLayerView& kv, const BatchView& batch, int64_t r,
                                            const int32_t* selected, const int32_t* selected_counts, int window) {
  RowKeys k;
  k.pos = batch.row_pos[r];
  k.first = max(0, k.pos - window + 1);
  k.n_window = k.pos - k.first + 1;
  int64_t n_compressed = 0;
  if (kv.ratio > 0) n_compressed = selected != nullptr ? selected_counts[r] : (k.pos + 1) / kv.ratio;
  k.n_keys = k.n_window + n_compressed;
  return k;
}

}  // namespace longctx::cuda

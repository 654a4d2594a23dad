// The CUDA backend for Hopper (sm_90a): the whole V4 forward on one GPU, behind the same
// interface as the CPU reference (src/backend/backend.h).
//
// Weights are uploaded once in their stored precision (bf16, fp8 e4m3 + 128x128 e8m0 scales,
// packed fp4 + per-32 scales; small vectors as fp32) and decoded inside the kernels. The KV
// cache lives in device memory with exactly the page layout of src/kv (same page ids, same bytes
// per entry, compressor state in the window pages), so the KV manager and prefix caching work
// unchanged. Activations are fp32, as in the reference; every reduction has a fixed order, so
// a row's logits do not depend on the rest of the batch (the backend is batch-invariant).
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "kv/kv_cache_manager.h"
#include "model/model_weights.h"

namespace longctx {

class CudaBackend : public Backend {
 public:
  // Uploads the weights and allocates the KV pools on device `device`.
  CudaBackend(const ModelWeights& weights, const KvLayout& layout, const KvPoolSizes& sizes,
              int device = 0);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  const KvLayout& kv_layout() const override;
  void forward(const ForwardBatch& batch, ForwardOutput* output) override;
  void forward_mtp(std::span<const MtpChunk> chunks, int64_t mtp_index, ForwardOutput* output) override;

  // Bytes of device memory held for weights and for the KV pools.
  size_t weight_bytes() const;
  size_t kv_bytes() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace longctx

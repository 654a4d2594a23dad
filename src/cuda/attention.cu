// Sparse attention with sink over the paged KV cache, for decode and (chunked) prefill, and
// the window-ring writes.
//
// Layout: q [rows, heads, d] fp32 (normed, roped); fresh_kv [rows, d] fp32 (the batch's own
// keys, already storage-rounded); stored keys in the window ring (slot (pos % 256) % window of
// the window page of block pos / 256) and in compressed pages (entry e of ratio r: page of block
// e r / 256, slot e % (256 / r)), f32 / bf16 / fp8 as kv_entry_codec. One shared key/value
// vector per token (MQA): o_h = sum_k softmax_k(q_h . key_k / sqrt(d), sink_h) key_k.
//
// Keys of the query at position t: window positions max(0, t - W + 1) .. t ascending (from
// fresh_kv when the position is in the chunk, else from the ring), then the compressed
// entries: selected [rows, topk_stride] with counts (ratio 4), or all visible ones (ratio 128).
// Split over keys (flash-decoding), so a decode row spreads over many SMs: block (row, group of
// up to 8 heads, split) takes keys [64 split, 64 split + 64) of the row's list; the group's
// queries stay in shared memory, keys stream through shared memory 16 at a time, decoded to
// fp32, with an online softmax in fp32 and fp32 accumulators. Each split leaves (max, sum,
// unnormalized output); a second launch combines the splits of a (row, head) in split order,
// adds the sink to the denominator and inverse-ropes at t. The number of splits depends only
// on the row's own key count, so decode, prefill and any batch give the same bits.
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kHeadsPerBlock = 8;
constexpr int kKeysPerTile = 16;
constexpr int kKeysPerSplit = 64;
constexpr int kMaxElements = 16;  // heads per block * d / threads, so d <= 512
constexpr int kCombineThreads = 128;

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

// partial [slice rows][heads][splits][2 + d]: running max, running sum, unnormalized output.
__global__ void __launch_bounds__(kThreads) attention_partial_kernel(
    KvLayerView kv, BatchView batch, int64_t row_begin, const float* q, const float* fresh_kv,
    const int32_t* selected, const int32_t* selected_counts, int topk_stride, int heads, int window,
    int splits, float* partial) {
  extern __shared__ float shared[];
  const int d = kv.head_dim;
  float* qs = shared;                                 // [hg][d]
  float* keys = qs + kHeadsPerBlock * d;              // [kKeysPerTile][d]
  float* probs = keys + kKeysPerTile * d;             // [hg][kKeysPerTile]
  float* running_max = probs + kHeadsPerBlock * kKeysPerTile;
  float* running_sum = running_max + kHeadsPerBlock;
  float* correction = running_sum + kHeadsPerBlock;
  __shared__ const uint8_t* key_source[kKeysPerTile];  // stored entry of each key of the tile
  __shared__ const float* key_fresh[kKeysPerTile];     // or its row of fresh_kv

  const int64_t r = row_begin + blockIdx.x;
  const int h0 = blockIdx.y * kHeadsPerBlock;
  const int hg = min(kHeadsPerBlock, heads - h0);
  const RowKeys rk = row_keys(kv, batch, r, selected, selected_counts, window);
  const int64_t key_begin = static_cast<int64_t>(blockIdx.z) * kKeysPerSplit;
  if (key_begin >= rk.n_keys) return;
  const int64_t key_end = min(rk.n_keys, key_begin + kKeysPerSplit);
  const ChunkInfo chunk = batch.chunks[batch.row_chunk[r]];
  const float scale = static_cast<float>(1.0 / sqrt(static_cast<double>(d)));

  for (int i = threadIdx.x; i < hg * d; i += kThreads) qs[i] = q[(r * heads + h0) * d + i];
  if (threadIdx.x < kHeadsPerBlock) {
    running_max[threadIdx.x] = -INFINITY;
    running_sum[threadIdx.x] = 0.0f;
  }
  float acc[kMaxElements];
#pragma unroll
  for (int m = 0; m < kMaxElements; ++m) acc[m] = 0.0f;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;

  for (int64_t tile = key_begin; tile < key_end; tile += kKeysPerTile) {
    const int tile_keys = static_cast<int>(min(static_cast<int64_t>(kKeysPerTile), key_end - tile));
    __syncthreads();
    // Where each key of the tile lives, found once per key: the block-table lookups and 64-bit
    // divisions are too dear to repeat for each of the d elements.
    if (threadIdx.x < tile_keys) {
      const int64_t j = tile + threadIdx.x;
      const uint8_t* source = nullptr;
      const float* fresh = nullptr;
      if (j < rk.n_window) {
        const int32_t p = rk.first + static_cast<int32_t>(j);
        if (p >= chunk.start_pos) {
          fresh = fresh_kv + (static_cast<int64_t>(chunk.first_row) + p - chunk.start_pos) * d;
        } else {
          source = window_ring_entry(kv, batch, chunk, p);
        }
      } else {
        const int64_t c = j - rk.n_window;
        const int64_t entry = selected != nullptr ? selected[r * topk_stride + c] : c;
        source = compressed_entry(kv, batch, chunk, entry);
      }
      key_source[threadIdx.x] = source;
      key_fresh[threadIdx.x] = fresh;
    }
    __syncthreads();
    for (int kk = 0; kk < tile_keys; ++kk) {
      const uint8_t* source = key_source[kk];
      const float* fresh = key_fresh[kk];
      for (int dim = threadIdx.x; dim < d; dim += kThreads) {
        keys[kk * d + dim] = fresh != nullptr ? fresh[dim] : decode_kv_element(source, dim, kv.kv_dtype, d, kv.rope_dim);
      }
    }
    __syncthreads();
    // Logits of (head, key) pairs, one warp per pair.
    for (int pair = warp; pair < hg * kKeysPerTile; pair += kThreads / 32) {
      const int h = pair / kKeysPerTile;
      const int kk = pair % kKeysPerTile;
      if (kk >= tile_keys) continue;
      float dot = 0.0f;
      for (int i = lane; i < d; i += 32) dot = fmaf(qs[h * d + i], keys[kk * d + i], dot);
      dot = warp_sum(dot);
      if (lane == 0) probs[h * kKeysPerTile + kk] = dot * scale;
    }
    __syncthreads();
    if (threadIdx.x < hg) {
      const int h = threadIdx.x;
      float* row = probs + h * kKeysPerTile;
      float tile_max = row[0];
      for (int kk = 1; kk < tile_keys; ++kk) tile_max = fmaxf(tile_max, row[kk]);
      const float new_max = fmaxf(running_max[h], tile_max);
      const float corr = expf(running_max[h] - new_max);
      float sum = 0.0f;
      for (int kk = 0; kk < tile_keys; ++kk) {
        row[kk] = expf(row[kk] - new_max);
        sum += row[kk];
      }
      running_sum[h] = running_sum[h] * corr + sum;
      running_max[h] = new_max;
      correction[h] = corr;
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < kMaxElements; ++m) {
      const int e = threadIdx.x + m * kThreads;
      if (e < hg * d) {
        const int h = e / d;
        const int dim = e % d;
        const float* p = probs + h * kKeysPerTile;
        float total = acc[m] * correction[h];
        for (int kk = 0; kk < tile_keys; ++kk) total = fmaf(p[kk], keys[kk * d + dim], total);
        acc[m] = total;
      }
    }
  }
  __syncthreads();
  const int64_t stride = 2 + d;
  float* base = partial + ((static_cast<int64_t>(blockIdx.x) * heads + h0) * splits + blockIdx.z) * stride;
#pragma unroll
  for (int m = 0; m < kMaxElements; ++m) {
    const int e = threadIdx.x + m * kThreads;
    if (e < hg * d) base[static_cast<int64_t>(e / d) * splits * stride + 2 + e % d] = acc[m];
  }
  if (threadIdx.x < hg) {
    base[static_cast<int64_t>(threadIdx.x) * splits * stride] = running_max[threadIdx.x];
    base[static_cast<int64_t>(threadIdx.x) * splits * stride + 1] = running_sum[threadIdx.x];
  }
}

// One block per (row, head): the splits in order, the sink, the inverse RoPE.
__global__ void __launch_bounds__(kCombineThreads) attention_combine_kernel(
    KvLayerView kv, BatchView batch, int64_t row_begin, const int32_t* selected, const int32_t* selected_counts,
    const float* sinks, int heads, int window, int splits, const float* partial, const float* inv_freq, float* out) {
  extern __shared__ float o[];  // [d]
  __shared__ float weights[1024];
  __shared__ float denominator;
  const int d = kv.head_dim;
  const int64_t r = row_begin + blockIdx.x;
  const int h = blockIdx.y;
  const RowKeys rk = row_keys(kv, batch, r, selected, selected_counts, window);
  const int used = static_cast<int>((rk.n_keys + kKeysPerSplit - 1) / kKeysPerSplit);
  const int64_t stride = 2 + d;
  const float* base = partial + (static_cast<int64_t>(blockIdx.x) * heads + h) * splits * stride;
  if (threadIdx.x == 0) {
    float m = base[0];
    for (int s = 1; s < used; ++s) m = fmaxf(m, base[s * stride]);
    float total = 0.0f;
    for (int s = 0; s < used; ++s) {
      weights[s] = expf(base[s * stride] - m);
      total += base[s * stride + 1] * weights[s];
    }
    // The sink is one more logit with a zero value: it only enlarges the denominator.
    denominator = total + expf(sinks[h] - m);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float total = 0.0f;
    for (int s = 0; s < used; ++s) total = fmaf(base[s * stride + 2 + i], weights[s], total);
    o[i] = total / denominator;
  }
  __syncthreads();
  float* rope = o + d - kv.rope_dim;
  for (int i = threadIdx.x; i < kv.rope_dim / 2; i += blockDim.x) {
    rope_pair(&rope[2 * i], &rope[2 * i + 1], rk.pos, inv_freq[i], true);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < d; i += blockDim.x) out[(r * heads + h) * d + i] = o[i];
}

__global__ void write_window_kernel(KvLayerView kv, BatchView batch, const float* fresh_kv) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (r >= batch.rows) return;
  const int32_t pos = batch.row_pos[r];
  const ChunkInfo chunk = batch.chunks[batch.row_chunk[r]];
  const int32_t last = chunk.start_pos + chunk.rows - 1;
  const int32_t later = pos + kv.window_entries;  // the next position of the same ring slot
  if (later <= last && later / kBlockPositions == pos / kBlockPositions) return;
  warp_encode_kv(fresh_kv + r * kv.head_dim, window_ring_entry(kv, batch, chunk, pos), kv.kv_dtype,
                 kv.head_dim, kv.rope_dim);
}

}  // namespace

size_t attention_workspace_floats(int64_t rows, int heads, int head_dim, int64_t max_keys) {
  const int64_t splits = std::max<int64_t>(1, (max_keys + kKeysPerSplit - 1) / kKeysPerSplit);
  return static_cast<size_t>(rows * heads * splits * (head_dim + 2));
}

void sparse_attention(const KvLayerView& kv, const BatchView& batch, const float* q,
                      const float* fresh_kv, const float* sinks, const int32_t* selected,
                      const int32_t* selected_counts, int topk_stride, int heads, int window,
                      int64_t max_keys, const float* inv_freq, float* out, float* workspace,
                      size_t workspace_floats, cudaStream_t stream) {
  if (batch.rows <= 0) return;
  const int d = kv.head_dim;
  if (kHeadsPerBlock * d > kMaxElements * kThreads) fail("CUDA attention: head dim ", d, " above 512");
  const int64_t splits = std::max<int64_t>(1, (max_keys + kKeysPerSplit - 1) / kKeysPerSplit);
  if (splits > 1024 || splits > 65535) fail("CUDA attention: ", max_keys, " keys per query is too many");
  const size_t per_row = attention_workspace_floats(1, heads, d, max_keys);
  const int64_t slice = std::min<int64_t>(batch.rows, static_cast<int64_t>(workspace_floats / per_row));
  if (slice < 1) fail("CUDA attention: workspace of ", workspace_floats, " floats holds no row (", per_row, " needed)");
  const int64_t shared = (static_cast<int64_t>(kHeadsPerBlock + kKeysPerTile) * d +
                          kHeadsPerBlock * kKeysPerTile + 3 * kHeadsPerBlock) * static_cast<int64_t>(sizeof(float));
  // Raised once per size (never while a graph is being captured: the first step runs eagerly).
  static int64_t allowed_shared = 48 * 1024;
  if (shared > allowed_shared) {
    LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(attention_partial_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(shared)));
    allowed_shared = shared;
  }
  for (int64_t begin = 0; begin < batch.rows; begin += slice) {
    const int64_t count = std::min(slice, batch.rows - begin);
    const dim3 grid(static_cast<unsigned>(count), ceil_div_u(heads, kHeadsPerBlock), static_cast<unsigned>(splits));
    attention_partial_kernel<<<grid, kThreads, shared, stream>>>(kv, batch, begin, q, fresh_kv, selected,
                                                                 selected_counts, topk_stride, heads, window,
                                                                 static_cast<int>(splits), workspace);
    LONGCTX_CUDA_CHECK_LAUNCH();
    attention_combine_kernel<<<dim3(static_cast<unsigned>(count), static_cast<unsigned>(heads)), kCombineThreads,
                               d * sizeof(float), stream>>>(kv, batch, begin, selected, selected_counts, sinks, heads,
                                                            window, static_cast<int>(splits), workspace, inv_freq, out);
    LONGCTX_CUDA_CHECK_LAUNCH();
  }
}

void write_window(const KvLayerView& kv, const BatchView& batch, const float* fresh_kv,
                  cudaStream_t stream) {
  if (batch.rows <= 0) return;
  write_window_kernel<<<ceil_div_u(batch.rows, 8), 256, 0, stream>>>(kv, batch, fresh_kv);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

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
// up to 16 heads, split) takes keys [n split, n split + n) of the row's list (n = 32 for rows
// of <= 1024 keys, else 64); the group's
// queries stay in shared memory, keys stream through shared memory 16 at a time, decoded to
// fp32, with an online softmax in fp32 and fp32 accumulators. Each split leaves (max, sum,
// unnormalized output); a second launch combines the splits of a (row, head) in split order,
// adds the sink to the denominator and inverse-ropes at t. The number of splits depends only
// on the row's own key count, so decode, prefill and any batch give the same bits.
#include <algorithm>

#include "cuda/attention_keys.cuh"
#include "cuda/cuda_check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kHeadsPerBlock = 16;  // = kThreads / kKeysPerTile (one score per thread)
constexpr int kKeysPerTile = 16;
// Keys per split: short rows split finer (more blocks for a decode row), long rows coarser (fewer
// partials to combine). A function of the row's own key count only: batch-invariant.
__host__ __device__ __forceinline__ int64_t keys_per_split(int64_t n_keys) { return n_keys <= 1024 ? 32 : 64; }
__host__ __device__ __forceinline__ int64_t splits_of(int64_t n_keys) {
  const int64_t per = keys_per_split(n_keys);
  return (n_keys + per - 1) / per;
}
// The most splits of any row with at most max_keys keys.
inline int64_t max_splits(int64_t max_keys) {
  return std::max<int64_t>({1, splits_of(std::min<int64_t>(max_keys, 1024)), splits_of(max_keys)});
}
constexpr int kMaxHeadDim = 512;
constexpr int kKeyPitch = kMaxHeadDim + 4;  // floats per key row in shared memory
constexpr int kQuadsPerLane = kMaxHeadDim / 4 / 32;
constexpr int kCombineThreads = 128;
static_assert(kHeadsPerBlock * kKeysPerTile == kThreads && kHeadsPerBlock == 2 * (kThreads / 32));


// partial [slice rows][heads][splits][2 + d]: running max, running sum, unnormalized output.
// Block = (row, 16 heads, split of 32 or 64 keys), keys in tiles of 16 decoded to fp32 in shared
// memory (rows padded so that float4 reads of 8 different keys hit different banks). Scores:
// thread (head t / 16, key t % 16) takes the whole dot product, dims ascending. Softmax: the 16
// lanes of a head reduce the tile's max and sum with fixed shuffle trees. Output: warp w owns
// heads 2w, 2w + 1, lane l the float4 columns l, l + 32, ...; keys added in tile order.
__global__ void __launch_bounds__(kThreads) attention_partial_kernel(
    KvLayerView kv, BatchView batch, int64_t row_begin, const float* q, const float* fresh_kv,
    const int32_t* selected, const int32_t* selected_counts, int topk_stride, int heads, int window,
    int splits, float* partial) {
  begin_dependent_kernel();
  extern __shared__ float4 shared4[];
  float* shared = reinterpret_cast<float*>(shared4);
  const int d = kv.head_dim;
  const int quads = d / 4;
  float* qs = shared;                                   // [kHeadsPerBlock][d]
  float* keys = qs + kHeadsPerBlock * d;                // [kKeysPerTile][kKeyPitch]
  float* probs = keys + kKeysPerTile * kKeyPitch;       // [kHeadsPerBlock][kKeysPerTile]
  float* correction = probs + kHeadsPerBlock * kKeysPerTile;  // [kHeadsPerBlock]
  __shared__ const uint8_t* key_source[kKeysPerTile];  // stored entry of each key of the tile
  __shared__ const float* key_fresh[kKeysPerTile];     // or its row of fresh_kv

  const int64_t r = row_begin + blockIdx.x;
  const int h0 = blockIdx.y * kHeadsPerBlock;
  const int hg = min(kHeadsPerBlock, heads - h0);
  const RowKeys rk = row_keys(kv, batch, r, selected, selected_counts, window);
  const int64_t per_split = keys_per_split(rk.n_keys);
  const int64_t key_begin = static_cast<int64_t>(blockIdx.z) * per_split;
  if (key_begin >= rk.n_keys) return;
  const int64_t key_end = min(rk.n_keys, key_begin + per_split);
  const ChunkInfo chunk = batch.chunks[batch.row_chunk[r]];
  const float scale = static_cast<float>(1.0 / sqrt(static_cast<double>(d)));

  for (int i = threadIdx.x; i < kHeadsPerBlock * d; i += kThreads) {
    qs[i] = i < hg * d ? q[(r * heads + h0) * d + i] : 0.0f;
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  // Scores and softmax: this thread's (head, key) of the tile.
  const int score_head = threadIdx.x / kKeysPerTile;
  const int score_key = threadIdx.x % kKeysPerTile;
  float running_max = -INFINITY;  // of score_head, the same in its 16 lanes
  float running_sum = 0.0f;
  // Output: heads 2 warp + {0, 1}, float4 columns lane + 32 c.
  float4 acc[2][kQuadsPerLane];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
    for (int c = 0; c < kQuadsPerLane; ++c) acc[hh][c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }

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
#pragma unroll 4
    for (int i = threadIdx.x; i < tile_keys * quads; i += kThreads) {
      const int kk = i / quads;
      const int dim = (i - kk * quads) * 4;
      const float* fresh = key_fresh[kk];
      float4 v;
      if (fresh != nullptr) {
        v = *reinterpret_cast<const float4*>(fresh + dim);
      } else {
        const uint8_t* source = key_source[kk];
        v.x = decode_kv_element(source, dim, kv.kv_dtype, d, kv.rope_dim);
        v.y = decode_kv_element(source, dim + 1, kv.kv_dtype, d, kv.rope_dim);
        v.z = decode_kv_element(source, dim + 2, kv.kv_dtype, d, kv.rope_dim);
        v.w = decode_kv_element(source, dim + 3, kv.kv_dtype, d, kv.rope_dim);
      }
      *reinterpret_cast<float4*>(keys + kk * kKeyPitch + dim) = v;
    }
    __syncthreads();
    // Scores of the tile, then its max and sum per head over the 16 lanes of the head.
    float score = -INFINITY;
    if (score_head < hg && score_key < tile_keys) {
      const float4* qrow = reinterpret_cast<const float4*>(qs + score_head * d);
      const float4* krow = reinterpret_cast<const float4*>(keys + score_key * kKeyPitch);
      // Four chains (dims 4i, 4i + 1, 4i + 2, 4i + 3), joined in a fixed order: a quarter of
      // the dependent-fma latency of one chain.
      float4 dot = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
      for (int i = 0; i < quads; ++i) {
        const float4 a = qrow[i];
        const float4 b = krow[i];
        dot.x = fmaf(a.x, b.x, dot.x);
        dot.y = fmaf(a.y, b.y, dot.y);
        dot.z = fmaf(a.z, b.z, dot.z);
        dot.w = fmaf(a.w, b.w, dot.w);
      }
      score = ((dot.x + dot.y) + (dot.z + dot.w)) * scale;
    } else if (score_head >= hg) {
      score = 0.0f;  // a head past the last: any finite value keeps its lanes' arithmetic quiet
    }
    float tile_max = score;
#pragma unroll
    for (int offset = kKeysPerTile / 2; offset > 0; offset /= 2) {
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
    }
    const float new_max = fmaxf(running_max, tile_max);
    const float corr = expf(running_max - new_max);
    const float weight = score_key < tile_keys ? expf(score - new_max) : 0.0f;
    float tile_sum = weight;
#pragma unroll
    for (int offset = kKeysPerTile / 2; offset > 0; offset /= 2) {
      tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, offset);
    }
    running_sum = running_sum * corr + tile_sum;
    running_max = new_max;
    probs[score_head * kKeysPerTile + score_key] = weight;
    if (score_key == 0) correction[score_head] = corr;
    __syncthreads();
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int h = 2 * warp + hh;
      if (h >= hg) continue;
      const float c = correction[h];
      const float* p = probs + h * kKeysPerTile;
#pragma unroll
      for (int cq = 0; cq < kQuadsPerLane; ++cq) {
        const int quad = lane + 32 * cq;
        if (quad >= quads) continue;
        float4 total = acc[hh][cq];
        total.x *= c;
        total.y *= c;
        total.z *= c;
        total.w *= c;
        for (int kk = 0; kk < tile_keys; ++kk) {
          const float4 v = *reinterpret_cast<const float4*>(keys + kk * kKeyPitch + 4 * quad);
          const float w = p[kk];
          total.x = fmaf(w, v.x, total.x);
          total.y = fmaf(w, v.y, total.y);
          total.z = fmaf(w, v.z, total.z);
          total.w = fmaf(w, v.w, total.w);
        }
        acc[hh][cq] = total;
      }
    }
  }
  const int64_t stride = 2 + d;
  float* base = partial + ((static_cast<int64_t>(blockIdx.x) * heads + h0) * splits + blockIdx.z) * stride;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int h = 2 * warp + hh;
    if (h >= hg) continue;
#pragma unroll
    for (int cq = 0; cq < kQuadsPerLane; ++cq) {
      const int quad = lane + 32 * cq;
      if (quad >= quads) continue;
      float* out = base + static_cast<int64_t>(h) * splits * stride + 2 + 4 * quad;
      out[0] = acc[hh][cq].x;
      out[1] = acc[hh][cq].y;
      out[2] = acc[hh][cq].z;
      out[3] = acc[hh][cq].w;
    }
  }
  if (score_key == 0 && score_head < hg) {
    base[static_cast<int64_t>(score_head) * splits * stride] = running_max;
    base[static_cast<int64_t>(score_head) * splits * stride + 1] = running_sum;
  }
}

// One block per (row, head): the splits in order, the sink, the inverse RoPE.
__global__ void __launch_bounds__(kCombineThreads) attention_combine_kernel(
    KvLayerView kv, BatchView batch, int64_t row_begin, const int32_t* selected, const int32_t* selected_counts,
    const float* sinks, int heads, int window, int splits, const float* partial, const float* inv_freq, float* out) {
  begin_dependent_kernel();
  extern __shared__ float o[];  // [d]
  __shared__ float weights[1024];
  __shared__ float denominator;
  const int d = kv.head_dim;
  const int64_t r = row_begin + blockIdx.x;
  const int h = blockIdx.y;
  const RowKeys rk = row_keys(kv, batch, r, selected, selected_counts, window);
  const int used = static_cast<int>(splits_of(rk.n_keys));
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
  begin_dependent_kernel();
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
  const int64_t splits = max_splits(max_keys);
  return static_cast<size_t>(rows * heads * splits * (head_dim + 2));
}

void sparse_attention(const KvLayerView& kv, const BatchView& batch, const float* q,
                      const float* fresh_kv, const float* sinks, const int32_t* selected,
                      const int32_t* selected_counts, int topk_stride, int heads, int window,
                      int64_t max_keys, const float* inv_freq, float* out, float* workspace,
                      size_t workspace_floats, cudaStream_t stream) {
  if (batch.rows <= 0) return;
  const int d = kv.head_dim;
  if (d > kMaxHeadDim || d % 4 != 0) fail("CUDA attention: head dim ", d, " above 512 or not a multiple of 4");
  const int64_t splits = max_splits(max_keys);
  if (splits > 1024 || splits > 65535) fail("CUDA attention: ", max_keys, " keys per query is too many");
  const size_t per_row = attention_workspace_floats(1, heads, d, max_keys);
  const int64_t slice = std::min<int64_t>(batch.rows, static_cast<int64_t>(workspace_floats / per_row));
  if (slice < 1) fail("CUDA attention: workspace of ", workspace_floats, " floats holds no row (", per_row, " needed)");
  const int64_t shared = (static_cast<int64_t>(kHeadsPerBlock) * d + kKeysPerTile * kKeyPitch +
                          kHeadsPerBlock * kKeysPerTile + kHeadsPerBlock) * static_cast<int64_t>(sizeof(float));
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
    launch_dependent(attention_partial_kernel, grid, kThreads, shared, stream, kv, batch, begin, q, fresh_kv, selected,
                                                                 selected_counts, topk_stride, heads, window,
                                                                 static_cast<int>(splits), workspace);
    LONGCTX_CUDA_CHECK_LAUNCH();
    launch_dependent(attention_combine_kernel, dim3(static_cast<unsigned>(count), static_cast<unsigned>(heads)), kCombineThreads, d * sizeof(float), stream, kv, batch, begin, selected, selected_counts, sinks, heads,
                                                            window, static_cast<int>(splits), workspace, inv_freq, out);
    LONGCTX_CUDA_CHECK_LAUNCH();
  }
}

void write_window(const KvLayerView& kv, const BatchView& batch, const float* fresh_kv,
                  cudaStream_t stream) {
  if (batch.rows <= 0) return;
  launch_dependent(write_window_kernel, ceil_div_u(batch.rows, 8), 256, 0, stream, kv, batch, fresh_kv);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

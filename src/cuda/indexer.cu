// The lightning indexer of ratio-4 layers: scores over the sequence's compressed entries
// through the block table, then the top-k entries per query.
//
// Layout: q [rows, heads, dim] fp32 (roped, Hadamard-rotated, fp4-simulated), weights
// [rows, heads] fp32 (already scaled by dim^-0.5 heads^-0.5); indexer keys as stored in the
// compressed pages (f32 / bf16 / packed e2m1 with per-32 e8m0 scales) at indexer_offset.
// scores [row_count, score_stride]: entry e of row r is visible iff e < (pos_r + 1) / ratio.
//
// indexer_scores: block = (row, 64 entries); the row's q is staged in shared memory (rows padded
// by one float against bank conflicts), each warp decodes one key at a time and lane l takes
// heads l, l + 32, ...; head terms w_h relu(q_h . k) are summed per lane then across lanes.
// topk_rows: one block per row; a 4-pass 8-bit radix select finds the k-th largest score, then
// two block scans emit the selected indices in ascending order: every entry above the
// threshold, and the lowest-indexed entries equal to it (ties go to the lower index, as the CPU
// reference's partial_sort does).
#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kScoreThreads = 256;
constexpr int kEntriesPerBlock = 64;
constexpr int kTopkThreads = 1024;

__global__ void __launch_bounds__(kScoreThreads) indexer_scores_kernel(
    KvLayerView kv, BatchView batch, int64_t row_begin, const float* q, const float* weights,
    int heads, int dim, float* scores, int64_t score_stride) {
  extern __shared__ float shared[];
  float* qs = shared;                               // [heads][dim + 1]
  float* ws = qs + heads * (dim + 1);               // [heads]
  float* keys = ws + heads;                         // [warps][dim]
  const int64_t r = row_begin + blockIdx.x;
  const int32_t pos = batch.row_pos[r];
  const int64_t visible = (pos + 1) / kv.ratio;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * kEntriesPerBlock;
  if (first >= visible) return;
  const ChunkInfo chunk = batch.chunks[batch.row_chunk[r]];
  for (int i = threadIdx.x; i < heads * dim; i += blockDim.x) {
    qs[(i / dim) * (dim + 1) + i % dim] = q[r * heads * dim + i];
  }
  for (int h = threadIdx.x; h < heads; h += blockDim.x) ws[h] = weights[r * heads + h];
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float* key = keys + warp * dim;
  const int64_t last = min(visible, first + kEntriesPerBlock);
  for (int64_t e = first + warp; e < last; e += kScoreThreads / 32) {
    const uint8_t* stored = indexer_key(kv, batch, chunk, e);
    for (int i = lane; i < dim; i += 32) key[i] = decode_key_element(stored, i, kv.key_dtype, dim);
    __syncwarp();
    float total = 0.0f;
    for (int h = lane; h < heads; h += 32) {
      const float* qh = qs + h * (dim + 1);
      float dot = 0.0f;
      for (int i = 0; i < dim; ++i) dot = fmaf(qh[i], key[i], dot);
      total = fmaf(ws[h], fmaxf(dot, 0.0f), total);
    }
    total = warp_sum(total);
    if (lane == 0) scores[static_cast<int64_t>(blockIdx.x) * score_stride + e] = total;
    __syncwarp();
  }
}

// Orderable key: larger float -> larger unsigned; -0 counts as +0.
__device__ __forceinline__ uint32_t order_key(float value) {
  if (value == 0.0f) value = 0.0f;
  const uint32_t bits = __float_as_uint(value);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Exclusive prefix sum over the block (kTopkThreads threads); *total gets the block total.
__device__ int block_exclusive_scan(int value, int* warp_totals, int* total) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  int inclusive = value;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  __syncthreads();
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int w = lane < kTopkThreads / 32 ? warp_totals[lane] : 0;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int other = __shfl_up_sync(0xffffffffu, w, offset);
      if (lane >= offset) w += other;
    }
    warp_totals[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  const int before = warp > 0 ? warp_totals[warp - 1] : 0;
  *total = warp_totals[kTopkThreads / 32 - 1];
  return before + inclusive - value;
}

__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const float* scores, int64_t score_stride,
                                                            const int32_t* row_pos, int64_t row_begin,
                                                            int ratio, int topk, int32_t* selected,
                                                            int32_t* counts) {
  __shared__ int histogram[256];
  __shared__ int warp_totals[32];
  __shared__ uint32_t chosen_prefix;
  __shared__ int chosen_remaining;
  const int64_t i = blockIdx.x;
  const int64_t n = (row_pos[row_begin + i] + 1) / ratio;
  const int k = static_cast<int>(min(static_cast<int64_t>(topk), n));
  int32_t* out = selected + i * topk;
  if (threadIdx.x == 0) counts[i] = k;
  if (n <= topk) {
    for (int64_t e = threadIdx.x; e < n; e += blockDim.x) out[e] = static_cast<int32_t>(e);
    return;
  }
  const float* row = scores + i * score_stride;
  uint32_t prefix = 0;
  uint32_t mask = 0;
  int remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) histogram[b] = 0;
    __syncthreads();
    for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
      const uint32_t key = order_key(row[e]);
      if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & 0xffu], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = 0;
      int bin = 255;
      for (; bin > 0; --bin) {
        if (above + histogram[bin] >= remaining) break;
        above += histogram[bin];
      }
      chosen_prefix = prefix | (static_cast<uint32_t>(bin) << shift);
      chosen_remaining = remaining - above;
    }
    __syncthreads();
    prefix = chosen_prefix;
    remaining = chosen_remaining;
    mask |= 0xffu << shift;
    __syncthreads();
  }
  // prefix is the k-th largest key; take everything above it and the first `remaining` equal.
  int written = 0;
  int equal_before = 0;
  for (int64_t tile = 0; tile < n; tile += blockDim.x) {
    const int64_t e = tile + threadIdx.x;
    const uint32_t key = e < n ? order_key(row[e]) : 0u;
    const int is_equal = e < n && key == prefix;
    int equal_total = 0;
    const int equal_rank = equal_before + block_exclusive_scan(is_equal, warp_totals, &equal_total);
    const int take = e < n && (key > prefix || (is_equal && equal_rank < remaining));
    int take_total = 0;
    const int slot = written + block_exclusive_scan(take, warp_totals, &take_total);
    if (take) out[slot] = static_cast<int32_t>(e);
    written += take_total;
    equal_before += equal_total;
  }
}

}  // namespace

void indexer_scores(const KvLayerView& kv, const BatchView& batch, int64_t row_begin,
                    int64_t row_count, const float* q, const float* weights, int heads, int dim,
                    float* scores, int64_t score_stride, int64_t max_visible, cudaStream_t stream) {
  if (row_count <= 0 || max_visible <= 0) return;
  const int64_t shared = (static_cast<int64_t>(heads) * (dim + 1) + heads + (kScoreThreads / 32) * dim) *
                         static_cast<int64_t>(sizeof(float));
  if (shared > 200 * 1024) fail("CUDA indexer: ", heads, " heads of ", dim, " dims do not fit in shared memory");
  // Raised once per size (never while a graph is being captured: the first step runs eagerly).
  static int64_t allowed_shared = 48 * 1024;
  if (shared > allowed_shared) {
    LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(indexer_scores_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(shared)));
    allowed_shared = shared;
  }
  const dim3 grid(static_cast<unsigned>(row_count), ceil_div_u(max_visible, kEntriesPerBlock));
  indexer_scores_kernel<<<grid, kScoreThreads, shared, stream>>>(kv, batch, row_begin, q, weights, heads, dim,
                                                                 scores, score_stride);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void topk_rows(const float* scores, int64_t score_stride, const int32_t* row_pos,
               int64_t row_begin, int64_t row_count, int ratio, int topk, int32_t* selected,
               int32_t* counts, cudaStream_t stream) {
  if (row_count <= 0) return;
  topk_kernel<<<static_cast<unsigned>(row_count), kTopkThreads, 0, stream>>>(
      scores, score_stride, row_pos, row_begin, ratio, topk, selected, counts);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

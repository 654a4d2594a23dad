// RoPE and the per-head work that follows the q / kv / indexer projections, fused per vector.
//
// Layout: q [rows, heads, d] fp32; kv [rows, d] fp32; indexer q [rows, heads, dim] with its
// per-head weights [rows, heads]. The rotary part is the LAST rope_dim dims of each vector, as
// interleaved pairs (2i, 2i+1) rotated by pos * inv_freq[i] (angle in fp32, cos/sin in double,
// as src/model/rope.cpp). One block per vector; the vector is staged in shared memory.
#include "cuda/cuda_check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void rope_rows_kernel(float* x, int64_t rows, int64_t stride, int rope_dim, const int32_t* pos,
                                 const float* inv_freq, bool inverse) {
  begin_dependent_kernel();
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int half = rope_dim / 2;
  if (index >= rows * half) return;
  const int64_t r = index / half;
  const int i = static_cast<int>(index % half);
  float* v = x + r * stride;
  rope_pair(&v[2 * i], &v[2 * i + 1], pos[r], inv_freq[i], inverse);
}

// Sum of squares of v[0, n) over the block; every thread gets it.
__device__ float block_square_sum(const float* v, int n, float* scratch) {
  float sum = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) sum = fmaf(v[i], v[i], sum);
  return block_sum(sum, scratch);
}

__device__ void rope_tail(float* v, int d, int rope_dim, int32_t pos, const float* inv_freq) {
  float* rope = v + d - rope_dim;
  for (int i = threadIdx.x; i < rope_dim / 2; i += blockDim.x) {
    rope_pair(&rope[2 * i], &rope[2 * i + 1], pos, inv_freq[i], false);
  }
}

// fp8 simulation of v[0, n) in blocks of 64, one warp per block.
__device__ void fp8_simulate_64(float* v, int n) {
  const int lane = threadIdx.x & 31;
  for (int block = threadIdx.x >> 5; block < n / 64; block += blockDim.x >> 5) {
    float* b = v + block * 64;
    const float x0 = b[lane];
    const float x1 = b[lane + 32];
    const float scale = fp8_scale_from_amax(warp_max(fmaxf(fabsf(x0), fabsf(x1))));
    b[lane] = fp8_simulate(x0, scale);
    b[lane + 32] = fp8_simulate(x1, scale);
  }
}

__global__ void __launch_bounds__(kThreads) q_norm_rope_kernel(float* q, int heads, int d, int rope_dim,
                                                               const int32_t* pos, const float* inv_freq,
                                                               float eps) {
  begin_dependent_kernel();
  extern __shared__ float v[];
  __shared__ float scratch[33];
  const int64_t vector = blockIdx.x;
  const int64_t r = vector / heads;
  float* head = q + vector * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) v[i] = head[i];
  const float inverse = 1.0f / sqrtf(block_square_sum(v, d, scratch) / static_cast<float>(d) + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) v[i] = v[i] * inverse;
  __syncthreads();
  rope_tail(v, d, rope_dim, pos[r], inv_freq);
  __syncthreads();
  for (int i = threadIdx.x; i < d; i += blockDim.x) head[i] = v[i];
}

__global__ void __launch_bounds__(kThreads) kv_norm_rope_quant_kernel(float* kv, int d, int rope_dim,
                                                                      const float* norm, const int32_t* pos,
                                                                      const float* inv_freq, float eps,
                                                                      int kv_dtype) {
  begin_dependent_kernel();
  extern __shared__ float v[];
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  float* row = kv + r * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) v[i] = row[i];
  const float inverse = 1.0f / sqrtf(block_square_sum(v, d, scratch) / static_cast<float>(d) + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) v[i] = norm[i] * (v[i] * inverse);
  __syncthreads();
  rope_tail(v, d, rope_dim, pos[r], inv_freq);
  __syncthreads();
  const int nope = d - rope_dim;
  fp8_simulate_64(v, nope);
  __syncthreads();
  // The storage round trip, so fresh keys equal the stored ones.
  if (kv_dtype == kKvBF16) {
    for (int i = threadIdx.x; i < d; i += blockDim.x) v[i] = round_bf16(v[i]);
  } else if (kv_dtype == kKvFP8) {
    fp8_simulate_64(v, nope);
    for (int i = nope + threadIdx.x; i < d; i += blockDim.x) v[i] = round_bf16(v[i]);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < d; i += blockDim.x) row[i] = v[i];
}

// fp4 simulation of v[0, n) in blocks of 32, one warp per block.
__device__ void fp4_simulate_32(float* v, int n) {
  const int lane = threadIdx.x & 31;
  for (int block = threadIdx.x >> 5; block < n / 32; block += blockDim.x >> 5) {
    const float x = v[block * 32 + lane];
    const float scale = fp4_scale_from_amax(warp_max(fabsf(x)));
    v[block * 32 + lane] = fp4_simulate(x, scale);
  }
}

__global__ void __launch_bounds__(kThreads) indexer_q_kernel(float* q, float* weights, int heads, int dim,
                                                             int rope_dim, const int32_t* pos,
                                                             const float* inv_freq, float weight_scale) {
  begin_dependent_kernel();
  extern __shared__ float v[];
  const int64_t vector = blockIdx.x;
  const int64_t r = vector / heads;
  float* head = q + vector * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) v[i] = head[i];
  __syncthreads();
  rope_tail(v, dim, rope_dim, pos[r], inv_freq);
  __syncthreads();
  hadamard(v, dim);
  fp4_simulate_32(v, dim);
  __syncthreads();
  for (int i = threadIdx.x; i < dim; i += blockDim.x) head[i] = v[i];
  if (threadIdx.x == 0) weights[vector] *= weight_scale;
}

}  // namespace

void rope_rows(float* x, int64_t rows, int64_t stride, int rope_dim, const int32_t* pos,
               const float* inv_freq, bool inverse, cudaStream_t stream) {
  const int64_t n = rows * (rope_dim / 2);
  if (n <= 0) return;
  launch_dependent(rope_rows_kernel, ceil_div_u(n, 256), 256, 0, stream, x, rows, stride, rope_dim, pos, inv_freq, inverse);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void q_norm_rope(float* q, int64_t rows, int heads, int d, int rope_dim, const int32_t* pos,
                 const float* inv_freq, float eps, cudaStream_t stream) {
  if (rows <= 0) return;
  launch_dependent(q_norm_rope_kernel, static_cast<unsigned>(rows * heads), kThreads, d * sizeof(float), stream,
      q, heads, d, rope_dim, pos, inv_freq, eps);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void kv_norm_rope_quant(float* kv, int64_t rows, int d, int rope_dim, const float* norm,
                        const int32_t* pos, const float* inv_freq, float eps, int kv_dtype,
                        cudaStream_t stream) {
  if (rows <= 0) return;
  if ((d - rope_dim) % 64 != 0) fail("CUDA kv: non-rope dims ", d - rope_dim, " not a multiple of 64");
  launch_dependent(kv_norm_rope_quant_kernel, static_cast<unsigned>(rows), kThreads, d * sizeof(float), stream,
      kv, d, rope_dim, norm, pos, inv_freq, eps, kv_dtype);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void indexer_q_prepare(float* q, float* weights, int64_t rows, int heads, int dim, int rope_dim,
                       const int32_t* pos, const float* inv_freq, float weight_scale,
                       cudaStream_t stream) {
  if (rows <= 0) return;
  if ((dim & (dim - 1)) != 0 || dim % 32 != 0) fail("CUDA indexer: head dim ", dim, " must be a power of two >= 32");
  launch_dependent(indexer_q_kernel, static_cast<unsigned>(rows * heads), kThreads, dim * sizeof(float), stream,
      q, weights, heads, dim, rope_dim, pos, inv_freq, weight_scale);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

// Embedding lookup, RMSNorm over rows, and small row copies.
//
// Layout: embedding table bf16 [vocab, hidden] (as stored); activations fp32 row-major.
// RMSNorm: one block per row; out = x * (1 / sqrt(mean(x^2) + eps)) * weight, the sum of squares
// reduced in a fixed order (per thread strided, then lanes, then warps).
#include "cuda/cuda_check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"

namespace longctx::cuda {
namespace {

__global__ void embedding_kernel(const uint16_t* table, int64_t hidden, const int32_t* tokens,
                                 int copies, float* out) {
  begin_dependent_kernel();
  const int64_t r = blockIdx.x;
  const uint16_t* source = table + static_cast<int64_t>(tokens[r]) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    const float value = bf16_bits_to_float(source[i]);
    for (int j = 0; j < copies; ++j) out[(r * copies + j) * hidden + i] = value;
  }
}

__global__ void rms_norm_kernel(const float* x, int64_t n, int64_t stride, const float* weight,
                                float eps, float* out) {
  begin_dependent_kernel();
  __shared__ float scratch[33];
  const float* row = x + blockIdx.x * stride;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum = fmaf(row[i], row[i], sum);
  const float mean_square = block_sum(sum, scratch) / static_cast<float>(n);
  const float inverse = 1.0f / sqrtf(mean_square + eps);
  float* target = out + blockIdx.x * stride;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float normalized = row[i] * inverse;
    target[i] = weight != nullptr ? weight[i] * normalized : normalized;
  }
}

__global__ void add_projected_streams_kernel(const float* e, const float* h, int64_t rows, int hc,
                                             int64_t hidden, float* streams) {
  begin_dependent_kernel();
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= rows * hc * hidden) return;
  const int64_t i = index % hidden;
  const int64_t r = index / (hc * hidden);
  streams[index] = e[r * hidden + i] + h[index];
}

__global__ void gather_rows_kernel(const float* src, const int32_t* index, int64_t width, float* dst) {
  begin_dependent_kernel();
  const float* row = src + static_cast<int64_t>(index[blockIdx.x]) * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) dst[blockIdx.x * width + i] = row[i];
}

}  // namespace

void embedding(const uint16_t* table, int64_t hidden, const int32_t* tokens, int64_t rows,
               int copies, float* out, cudaStream_t stream) {
  if (rows <= 0) return;
  launch_dependent(embedding_kernel, static_cast<unsigned>(rows), 256, 0, stream, table, hidden, tokens, copies, out);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void rms_norm_rows(const float* x, int64_t rows, int64_t n, int64_t stride, const float* weight,
                   float eps, float* out, cudaStream_t stream) {
  if (rows <= 0) return;
  launch_dependent(rms_norm_kernel, static_cast<unsigned>(rows), 256, 0, stream, x, n, stride, weight, eps, out);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void add_projected_streams(const float* e, const float* h, int64_t rows, int hc, int64_t hidden,
                           float* streams, cudaStream_t stream) {
  const int64_t n = rows * hc * hidden;
  if (n <= 0) return;
  launch_dependent(add_projected_streams_kernel, ceil_div_u(n, 256), 256, 0, stream, e, h, rows, hc, hidden, streams);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void gather_rows(const float* src, const int32_t* index, int64_t count, int64_t width, float* dst,
                 cudaStream_t stream) {
  if (count <= 0) return;
  launch_dependent(gather_rows_kernel, static_cast<unsigned>(count), 256, 0, stream, src, index, width, dst);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

// Embedding lookup, RMSNorm over rows, and small row copies.
//
// Layout: embedding table bf16 [vocab, hidden] (as stored); activations fp32 row-major.
// RMSNorm: one block per row; out = x * (1 / sqrt(mean(x^2) + eps)) * weight, the sum of squares
// reduced in a fixed order (per thread strided, then lanes, then warps). The fp8 form
// (rms_norm_quantize_rows, Fp8Activations in kernels.h): the same sum, then each warp normalizes
// and quantizes whole 128-column blocks (lane l: columns 4l..4l+3, re-read from L1/L2).
#include "cuda/cuda_check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/fp8_activation.cuh"
#include "longctx/error.h"

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

// 1 / sqrt(mean(row^2) + eps), in the fixed order above (every thread of the block calls it).
__device__ __forceinline__ float rms_inverse(const float* row, int64_t n, float eps, float* scratch) {
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum = fmaf(row[i], row[i], sum);
  const float mean_square = block_sum(sum, scratch) / static_cast<float>(n);
  return 1.0f / sqrtf(mean_square + eps);
}

__global__ void rms_norm_kernel(const float* x, int64_t n, int64_t stride, const float* weight,
                                float eps, float* out) {
  begin_dependent_kernel();
  __shared__ float scratch[33];
  const float* row = x + blockIdx.x * stride;
  const float inverse = rms_inverse(row, n, eps, scratch);
  float* target = out + blockIdx.x * stride;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float normalized = row[i] * inverse;
    target[i] = weight != nullptr ? weight[i] * normalized : normalized;
  }
}

__global__ void rms_norm_quantize_kernel(const float* x, int64_t n, int64_t stride, const float* weight, float eps,
                                         Fp8Activations a, float* out) {
  begin_dependent_kernel();
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  const float* row = x + r * stride;
  const float inverse = rms_inverse(row, n, eps, scratch);
  const int lane = static_cast<int>(threadIdx.x & 31);
  for (int64_t b = threadIdx.x / 32; b < n / 128; b += blockDim.x / 32) {
    const int64_t column = b * 128 + 4 * lane;
    const float4 loaded = *reinterpret_cast<const float4*>(row + column);
    float v[4] = {loaded.x, loaded.y, loaded.z, loaded.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float normalized = v[i] * inverse;
      v[i] = weight != nullptr ? weight[column + i] * normalized : normalized;
    }
    // Each lane writes only the columns it read (out may alias x).
    if (out != nullptr) *reinterpret_cast<float4*>(out + r * stride + column) = make_float4(v[0], v[1], v[2], v[3]);
    uint32_t packed = 0;
    const float scale = fp8_quantize_block(v, &packed);
    fp8_store_block(a, r, b, lane, v, packed, scale);
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

Fp8Activations rms_norm_quantize_rows(const float* x, int64_t rows, int64_t n, int64_t stride,
                                      const float* weight, float eps, void* buffer, float* out,
                                      cudaStream_t stream) {
  if (n % 128 != 0 || stride % 4 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      (out != nullptr && reinterpret_cast<uintptr_t>(out) % 16 != 0)) {
    fail("RMSNorm to fp8: rows of ", n, " floats must be 128-float blocks, 16-byte aligned");
  }
  const Fp8Activations a = fp8_activations_in(buffer, rows, n);
  if (rows <= 0) return a;
  launch_dependent(rms_norm_quantize_kernel, static_cast<unsigned>(rows), 256, 0, stream, x, n, stride, weight, eps, a, out);
  LONGCTX_CUDA_CHECK_LAUNCH();
  return a;
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

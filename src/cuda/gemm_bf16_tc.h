// The bf16 tensor-core path of linear() for the grouped wo_a (gemm_bf16_tc.cu): the precision of
// DeepSeek's reference inference code for that projection, which dequantizes the fp8 weight to
// bf16 and keeps the activations in bf16 (unlike the other fp8 linears, whose activations it
// quantizes to e4m3: gemm_fp8_tc.h would add that rounding here, 3e-2 relative error).
//
// Per call: the activations are rounded fp32 -> bf16 (to nearest even), the weight's e4m3 codes
// times their 128x128 e8m0 scales are written as bf16 (exact: at most 4 significant bits times a
// power of two, for scales above 2^-117), then one batched cuBLASLt bf16 x bf16 -> fp32 GEMM (fp32
// accumulation, CUBLAS_COMPUTE_32F) does all groups. The sums run in the library's order, not the
// fp32 kernels' one: not batch-invariant, which is why linear() takes this path only for calls of
// at least LinearWorkspace::tensor_core_min_rows rows.
//
// The weight is converted per call, not cached: 8 x 1024 x 4096 codes (V4-Flash) are 67 MB of
// bf16 per layer, 2.9 GB for 43 layers, while converting them moves ~100 MB (tens of
// microseconds) against a GEMM of milliseconds at prefill sizes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/kernels.h"

namespace longctx::cuda {

// Rows converted and multiplied per pass: bounds the activation scratch (4096 rows of wo_a's
// 32768 inputs: 256 MB of bf16) while keeping each GEMM large enough to fill the chip.
inline constexpr int64_t kBf16TcPassRows = 4096;

// Scratch bytes (LinearWorkspace::bf16_scratch_bytes) for calls of up to `rows` rows of a weight
// [out, in] whose activation rows are x_width floats (groups x in for the grouped wo_a): the bf16
// weight plus min(rows, kBf16TcPassRows) bf16 activation rows.
size_t bf16_tc_scratch_bytes(int64_t out, int64_t in, int64_t rows, int64_t x_width);

// Runs y = x W^T (grouped as linear() describes when x_group_outputs > 0) on the tensor cores for
// all rows when the call qualifies: fp8 weight with scales, in a multiple of 8, out at most 65535
// and (per group) a multiple of 8, 16-byte aligned x, y and weight pointers, x and y strides
// multiples of 4, a cuBLASLt handle and workspace (LinearWorkspace::blas_*), and bf16 scratch of at least
// bf16_tc_scratch_bytes. Returns the rows done: all of them, or 0 (having enqueued nothing) when
// the call does not qualify. Does not look at tensor_core_min_rows (linear() does). No host
// synchronization.
//
// `steps` (for the benchmark, which times the GEMM alone): kBf16TcConvert enqueues only the
// conversions into the scratch, kBf16TcMultiply only the GEMM on what a kBf16TcConvert call with
// the same w, x shape and rows left there (y may be null for the first, x for the second). Split
// steps need rows <= kBf16TcPassRows (one pass); otherwise the call returns 0.
enum Bf16TcSteps : int { kBf16TcConvert = 1, kBf16TcMultiply = 2, kBf16TcAll = 3 };
int64_t bf16_tc_linear(const LinearView& w, const float* x, int64_t x_stride, int64_t rows, float* y,
                       int64_t y_stride, int64_t x_group_outputs, const LinearWorkspace& workspace,
                       cudaStream_t stream, int steps = kBf16TcAll);

}  // namespace longctx::cuda

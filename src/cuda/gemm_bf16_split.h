// The tensor-core path of linear() for bf16 weights (gemm_bf16_split.cu), at fp32 accuracy: the
// compressors' wkv / wgate, the indexer's weights_proj, the MoE gate and the head, which the
// reference computes in fp32 (fp32 activations times the bf16 weight), so rounding the
// activations to bf16 would change the numerics.
//
// Each fp32 activation x is split into three bf16 terms, hi = bf16(x), mid = bf16(x - hi),
// lo = bf16(x - hi - mid) (round to nearest even; each subtraction is exact), whose sum is x
// exactly for |x| >= 2^-110 (below, bf16 subnormals drop bits of lo: an absolute error under
// 2^-133 per element). Each term times the exact bf16 weight is a bf16 GEMM with exact products
// and fp32 accumulation (cuBLASLt, CUBLAS_COMPUTE_32F), and the products are added smallest
// first: y = lo W^T, then y += mid W^T, then y += hi W^T in K slices (kBf16SplitKChunk; beta = 1,
// in place). The result matches the fp32 kernels to about fp32 rounding (relative error against
// float64 at most ~1.5x theirs), not bitwise (the library's summation order): not
// batch-invariant, so linear() takes this path only for calls of at least
// LinearWorkspace::tensor_core_min_rows rows. Non-finite hi (x infinite or NaN, or |x| above
// bf16's largest finite value) gets mid = lo = 0, so that an infinite x contributes inf x w as
// in fp32, not NaN.
//
// Two terms (x to ~17 bits) would save ~25% of the time but add ~2.5e-6 relative error (5x the
// fp32 kernels'): measured, not used.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/kernels.h"

namespace longctx::cuda {

// Rows split and multiplied per pass: bounds the scratch (3 terms x 4096 rows x 4096 inputs:
// 96 MiB) while keeping each GEMM large enough to fill the chip.
inline constexpr int64_t kBf16SplitPassRows = 4096;

// Terms the activations are split into: 3 keeps all 24 bits of the fp32 mantissa; 2 keeps ~17
// (measured in gemm_bf16_split_test.cpp; linear() uses 3).
inline constexpr int kBf16SplitTerms = 3;

// hi's products, which carry y, are accumulated over K slices of this many inputs, each slice's
// GEMM adding its sum to y in fp32 (beta = 1, rounded to nearest). The tensor cores' own fp32
// accumulation within a GEMM loses more than fp32 rounding, growing with the chain (as if each
// step truncated): over K = 4096 in one GEMM, 1.8e-6 to 5.4e-6 relative error against float64,
// where the fp32 kernels give 4.7e-7; with slices of 1024 / 512 / 256, 1.1-1.4e-6 / 5-7e-7 /
// 2.6-4.8e-7 (H100, gemm_bf16_split_test.cpp). 512 costs ~20% over 1024 in the GEMMs.
inline constexpr int64_t kBf16SplitKChunk = 512;

// linear() takes this path for weights of at least this many outputs. Below, the fp32 kernels,
// which read x once, win: the split writes and the GEMMs read 1.5x x's bytes whatever the width
// (H100, M = 8192, in = 4096: 64 outputs 0.28 ms against 0.32 ms on the fp32 kernels; the
// synthetic 8-expert gate 0.5 ms against 0.05 ms).
inline constexpr int64_t kBf16SplitMinOutputs = 64;

// Scratch bytes (LinearWorkspace::split_scratch_bytes) for calls of up to `rows` rows of up to
// `in` inputs: kBf16SplitTerms bf16 matrices [min(rows, kBf16SplitPassRows), in].
size_t bf16_split_scratch_bytes(int64_t rows, int64_t in);

// Runs y = x W^T for a bf16 weight W [out, in] on the tensor cores for all rows when the call
// qualifies: bf16 weight, a cuBLASLt handle and workspace (LinearWorkspace::blas_*), split
// scratch of at least bf16_split_scratch_bytes(rows, in), y_stride >= out, x_stride >= in, and
// an algorithm from cuBLASLt for the shape. Returns the rows done: all of them, or 0 (having
// enqueued nothing) when the call does not qualify. Does not look at tensor_core_min_rows
// (linear() does). No host synchronization.
//
// `terms` (2 or 3; tests and the benchmark): how many bf16 terms carry x. `k_chunk` (a multiple
// of 8; tests and the benchmark): the K slice of hi's GEMMs. `steps` (benchmark):
// kBf16SplitConvert enqueues only the split into the scratch, kBf16SplitMultiply only the GEMMs
// on what a kBf16SplitConvert call with the same x shape left there; both need rows <=
// kBf16SplitPassRows (one pass), else the call returns 0.
enum Bf16SplitSteps : int { kBf16SplitConvert = 1, kBf16SplitMultiply = 2, kBf16SplitAll = 3 };
int64_t bf16_split_linear(const LinearView& w, const float* x, int64_t x_stride, int64_t rows, float* y,
                          int64_t y_stride, const LinearWorkspace& workspace, cudaStream_t stream,
                          int terms = kBf16SplitTerms, int steps = kBf16SplitAll,
                          int64_t k_chunk = kBf16SplitKChunk);

}  // namespace longctx::cuda

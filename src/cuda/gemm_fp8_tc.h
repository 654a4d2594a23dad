// The tensor-core path of linear() for fp8 weights (gemm_fp8_tc.cu): cuBLASLt's block-scaled
// fp8 GEMM on Hopper, in the precision of DeepSeek's reference inference code. The activations
// are quantized per (row, 128-column block) to e4m3 codes with a power-of-two scale (exact for
// activations that are already fp8-simulated, as the backend's are for fp8 weights), the weights
// keep their e4m3 codes and 128x128 scales, and the products accumulate in fp32 with one scale
// promotion per 128-deep K block. The sums run in the library's order, not the fp32 kernels' one:
// results are not batch-invariant, which is why linear() takes this path only for calls of at
// least LinearWorkspace::tensor_core_min_rows rows.
//
// Plain C++ (no cuBLASLt header), so the backend, the tests and the benchmarks can own the
// handle and the scratch that LinearWorkspace points at.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/kernels.h"

namespace longctx::cuda {

// A cuBLASLt handle (cublasLtHandle_t), created on construction on the current device and
// destroyed with the object.
class BlasLtHandle {
 public:
  BlasLtHandle();
  ~BlasLtHandle();
  BlasLtHandle(const BlasLtHandle&) = delete;
  BlasLtHandle& operator=(const BlasLtHandle&) = delete;
  void* get() const { return handle_; }

 private:
  void* handle_ = nullptr;
};

// cuBLASLt workspace the path asks for (LinearWorkspace::blas_workspace_bytes).
inline constexpr size_t kFp8TcBlasWorkspaceBytes = size_t{32} << 20;

// Scratch bytes (LinearWorkspace::fp8_scratch_bytes) for calls of up to `rows` rows whose
// activation rows are up to `x_width` floats (for the grouped wo_a, groups x in).
size_t fp8_tc_scratch_bytes(int64_t rows, int64_t x_width);

// Runs y = x W^T on the tensor cores for the first rows - rows % 4 rows (cuBLASLt needs the
// activation-scale vectors 16-byte aligned) when the call qualifies: fp8 weight, in a multiple of
// 512, out (per group for the grouped wo_a: a multiple of 128) a multiple of 16, 16-byte aligned
// pointers and strides, a handle, and scratch of at least fp8_tc_scratch_bytes(rows, x width).
// Returns the rows done (linear() runs the rest on the fp32 kernels); 0, having enqueued
// nothing, when the call does not qualify. Does not look at tensor_core_min_rows (linear()
// does). No host synchronization.
//
// `steps` splits the work for callers that reuse quantized activations (and for the benchmark
// that times the GEMM alone): kQuantize enqueues only the quantization of x (and of w's scales)
// into the scratch, kMultiply only the GEMM on what the scratch holds from a kQuantize call with
// the same w, x shape and rows (y may be null for the first, x for the second).
enum Fp8TcSteps : int { kFp8TcQuantize = 1, kFp8TcMultiply = 2, kFp8TcAll = 3 };
int64_t fp8_tc_linear(const LinearView& w, const float* x, int64_t x_stride, int64_t rows, float* y,
                      int64_t y_stride, int64_t x_group_outputs, const LinearWorkspace& workspace,
                      cudaStream_t stream, int steps = kFp8TcAll);

// The tensor-core GEMM on activations quantized once (Fp8Activations, kernels.h): whether a
// weight qualifies for `rows` rows (as fp8_tc_linear on an input of w.in floats per row, y rows of
// w.out floats; the plan is looked up here, host only, nothing enqueued), and the GEMM of the
// first x.tc_rows rows (converts w's scales into the scratch's first part, then one
// cublasLtMatmul; 0, having enqueued nothing, when the call does not qualify). The bits of
// fp8_tc_linear on fp8_simulate_rows(x): the same plan on the same codes and scales.
// linear_fp8 (kernels.h) adds the tail rows.
bool fp8_tc_supported(const LinearView& w, int64_t rows, const LinearWorkspace& workspace);
int64_t fp8_tc_multiply(const LinearView& w, const Fp8Activations& x, float* y, int64_t y_stride,
                        const LinearWorkspace& workspace, cudaStream_t stream);

}  // namespace longctx::cuda

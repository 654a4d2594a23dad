// The scratch a test's linear() calls may use: split-K partials, a cuBLASLt handle and its
// workspace, and room for each tensor-core path (gemm_fp8_tc.h, gemm_bf16_tc.h,
// gemm_bf16_split.h) in the bytes the test asks for; a path given 0 bytes gets no scratch and so
// stays on the fp32 kernels.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/gemm_fp8_tc.h"
#include "cuda/kernels.h"

namespace longctx::cuda_test {

struct LinearWorkspaces {
  struct Bytes {
    size_t fp8 = 0;
    size_t bf16 = 0;
    size_t split = 0;
  };
  explicit LinearWorkspaces(Bytes bytes) : fp8(bytes.fp8), bf16(bytes.bf16), split(bytes.split) {}

  cuda::DeviceBuffer<float> partial{size_t{4} << 20};
  cuda::BlasLtHandle handle;
  cuda::DeviceBuffer<uint8_t> blas{cuda::kFp8TcBlasWorkspaceBytes};
  cuda::DeviceBuffer<uint8_t> fp8, bf16, split;

  // The batch-invariant kernels only.
  cuda::LinearWorkspace simt() { return {partial.data(), partial.size(), 132}; }
  // The tensor-core paths for calls of at least `min_rows` rows.
  cuda::LinearWorkspace tensor_cores(int min_rows) {
    cuda::LinearWorkspace w = simt();
    w.tensor_core_min_rows = min_rows;
    w.blas_handle = handle.get();
    w.blas_workspace = blas.data();
    w.blas_workspace_bytes = blas.size();
    w.fp8_scratch = fp8.data();
    w.fp8_scratch_bytes = fp8.size();
    w.bf16_scratch = bf16.data();
    w.bf16_scratch_bytes = bf16.size();
    w.split_scratch = split.data();
    w.split_scratch_bytes = split.size();
    return w;
  }
};

}  // namespace longctx::cuda_test

// What the linear tests share: a random weight on the device, and the scratch a test's linear()
// calls may use.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/gemm_fp8_tc.h"
#include "cuda/kernels.h"
#include "model/model_weights.h"
#include "test_util.h"

namespace longctx::cuda_test {

// A random weight in its stored format (random_linear) with its device copy and view.
struct RandomDeviceLinear {
  HostLinear host;
  cuda::DeviceBuffer<uint8_t> weight, scale;
  cuda::LinearView view;
  RandomDeviceLinear(WeightFormat format, int64_t out, int64_t in, uint32_t seed, bool quantize_activations = false)
      : host(random_linear(format, out, in, seed, quantize_activations)),
        weight(cuda::to_device(host.weight)),
        scale(cuda::to_device(host.scale)) {
    const int code = format == WeightFormat::kBF16  ? cuda::kWeightBF16
                     : format == WeightFormat::kFP8 ? cuda::kWeightFP8
                                                    : cuda::kWeightFP4;
    view = {weight.data(), host.scale.empty() ? nullptr : scale.data(), code, out, in, 0, 0};
  }
};

// Split-K partials, a cuBLASLt handle and its workspace, and room for each tensor-core path
// (gemm_fp8_tc.h, gemm_bf16_tc.h, gemm_bf16_split.h) in the bytes the test asks for; a path given
// 0 bytes gets no scratch and so stays on the fp32 kernels.
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

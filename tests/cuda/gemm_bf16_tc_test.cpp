// The bf16 tensor-core path of linear() for the grouped wo_a (gemm_bf16_tc.h) against the CPU
// reference (cpu::linear_grouped), on random fp8 weights (every e4m3 code, random 128x128
// scales) and N(0, 1) fp32 activations, which the path rounds to bf16 as DeepSeek's reference
// does.
//
// Two checks per case:
//  - against the reference on the fp32 activations: the error of rounding the activations to
//    bf16. Tolerance kTolerance = 5e-3 (max |y - ref| / max |ref|); measured on an H100
//    (2026-11-23): 1.05e-3 (one row) to 2.03e-3 over the six shapes below.
//  - against the reference on the activations rounded to bf16 on the host (round to nearest
//    even): the weights are exact in bf16 and the products accumulate in fp32, so only the
//    summation order differs. Tolerance kExactInputsTolerance = 2e-5; measured 2.4e-7 to 2.0e-6.
//    Truncating instead of rounding, or an inexact weight, would show here at ~1e-3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/float_formats.h"
#include "cpu/cpu_linear.h"
#include "cuda/gemm_bf16_tc.h"
#include "cuda/gemm_fp8_tc.h"
#include "cuda/kernels.h"
#include "linear_fixtures.h"
#include "test_util.h"

namespace longctx {
namespace {

using cuda::DeviceBuffer;
using cuda::to_device;
using cuda_test::LinearWorkspaces;
using cuda_test::RandomDeviceLinear;
using cuda_test::download;
using cuda_test::packed;
using cuda_test::poisoned;
using cuda_test::same_bits;
using cuda_test::HostLinear;
using cuda_test::random_floats;
using cuda_test::random_linear;
using cuda_test::relative_error;

constexpr double kTolerance = 5e-3;
constexpr double kExactInputsTolerance = 2e-5;

// wo_a: fp8 weight, activations kept out of the fp8 simulation.
struct WoA : RandomDeviceLinear {
  WoA(int64_t out, int64_t in, uint32_t seed) : RandomDeviceLinear(WeightFormat::kFP8, out, in, seed, false) {}
};

// The backend's scratch for calls of up to `rows` rows of a weight [out, in] with x_width inputs.
// Room for the fp8 path too, so that a grouped call could take it (it must not).
LinearWorkspaces make_workspaces(int64_t out, int64_t in, int64_t rows, int64_t x_width) {
  return LinearWorkspaces({.fp8 = cuda::fp8_tc_scratch_bytes(4096, 4096),
                           .bf16 = cuda::bf16_tc_scratch_bytes(out, in, rows, x_width)});
}

TEST(Bf16TensorCore, GroupedWoAMatchesCpuReference) {
  struct Case {
    int64_t groups, per_group, in, rows, x_pad, y_pad;
  };
  // Rows not a multiple of 4, 8 or 16 (77, 301, 1001), a single row, more rows than one pass
  // (kBf16TcPassRows + 37: two passes, the second short), padded strides, V4-Flash's 8 groups.
  const Case cases[] = {{8, 128, 512, 301, 0, 0},  {8, 256, 512, 77, 128, 4}, {4, 64, 1024, 1001, 8, 16},
                        {2, 128, 256, 1, 0, 0},    {2, 128, 256, cuda::kBf16TcPassRows + 37, 0, 8},
                        {16, 32, 128, 130, 4, 0}};
  uint32_t seed = 200;
  for (const Case& c : cases) {
    const int64_t out = c.groups * c.per_group, x_width = c.groups * c.in;
    const WoA w(out, c.in, seed++);
    const int64_t x_stride = x_width + c.x_pad, y_stride = out + c.y_pad;
    const std::vector<float> x = random_floats(static_cast<size_t>(c.rows * x_stride), 1.0f, seed++);
    const DeviceBuffer<float> dx = to_device(x);
    LinearWorkspaces workspaces = make_workspaces(out, c.in, c.rows, x_width);
    const cuda::LinearWorkspace tc = workspaces.tensor_cores(1);
    DeviceBuffer<float> dy = poisoned(static_cast<size_t>(c.rows * y_stride));
    cuda::linear(w.view, dx.data(), x_stride, c.rows, dy.data(), y_stride, c.per_group, tc, nullptr);
    const std::vector<float> y = packed(download(dy, dy.size()), c.rows, out, y_stride);
    // linear() took this path for all rows: the bits of a direct call.
    DeviceBuffer<float> dy2 = poisoned(dy.size());
    ASSERT_EQ(cuda::bf16_tc_linear(w.view, dx.data(), x_stride, c.rows, dy2.data(), y_stride, c.per_group, tc,
                                   nullptr),
              c.rows);
    EXPECT_TRUE(same_bits(y, packed(download(dy2, dy2.size()), c.rows, out, y_stride)));

    const std::vector<float> x_packed = packed(x, c.rows, x_width, x_stride);
    std::vector<float> ref(y.size()), ref_bf16(y.size());
    cpu::linear_grouped(w.host.w, c.groups, x_packed.data(), c.rows, ref.data());
    std::vector<float> x_bf16 = x_packed;
    for (float& v : x_bf16) v = round_to_bf16(v);
    cpu::linear_grouped(w.host.w, c.groups, x_bf16.data(), c.rows, ref_bf16.data());
    const double error = relative_error(y, ref), exact_error = relative_error(y, ref_bf16);
    std::printf("bf16 tensor cores, wo_a %lld x [%lld x %lld] rows %lld: relative error %.3g (fp32 activations), "
                "%.3g (bf16-rounded activations)\n",
                static_cast<long long>(c.groups), static_cast<long long>(c.per_group), static_cast<long long>(c.in),
                static_cast<long long>(c.rows), error, exact_error);
    EXPECT_LE(error, kTolerance) << c.groups << " x " << c.per_group << " rows " << c.rows;  // NaN fails too
    EXPECT_LE(exact_error, kExactInputsTolerance) << c.groups << " x " << c.per_group << " rows " << c.rows;
  }
}

TEST(Bf16TensorCore, DispatchThreshold) {
  // Below tensor_core_min_rows, and with tensor_core_min_rows == 0 (batch-invariant mode, scratch
  // in place), the fp32 kernels' bits; at the threshold the bf16 path's.
  const int64_t groups = 8, per_group = 128, in = 512, out = groups * per_group, min_rows = 67;
  const WoA w(out, in, 300);
  const std::vector<float> x = random_floats(static_cast<size_t>(min_rows * groups * in), 1.0f, 301);
  const DeviceBuffer<float> dx = to_device(x);
  LinearWorkspaces workspaces = make_workspaces(out, in, min_rows, groups * in);
  for (const int64_t rows : {min_rows - 1, min_rows}) {
    DeviceBuffer<float> simt = poisoned(static_cast<size_t>(rows * out)), tc = poisoned(simt.size()),
                        off = poisoned(simt.size()), direct = poisoned(simt.size());
    cuda::linear(w.view, dx.data(), groups * in, rows, simt.data(), out, per_group, workspaces.simt(), nullptr);
    cuda::linear(w.view, dx.data(), groups * in, rows, tc.data(), out, per_group, workspaces.tensor_cores(min_rows),
                 nullptr);
    cuda::linear(w.view, dx.data(), groups * in, rows, off.data(), out, per_group, workspaces.tensor_cores(0), nullptr);
    ASSERT_EQ(cuda::bf16_tc_linear(w.view, dx.data(), groups * in, rows, direct.data(), out, per_group,
                                   workspaces.tensor_cores(min_rows), nullptr),
              rows);
    const std::vector<float> a = download(simt, simt.size()), b = download(tc, tc.size());
    EXPECT_TRUE(same_bits(a, download(off, off.size()))) << "rows " << rows;
    std::vector<float> ref(a.size());
    cpu::linear_grouped(w.host.w, groups, x.data(), rows, ref.data());
    EXPECT_LE(relative_error(a, ref), 1e-5);
    if (rows < min_rows) {
      EXPECT_TRUE(same_bits(a, b)) << "below the threshold the fp32 kernels run";
    } else {
      EXPECT_TRUE(same_bits(b, download(direct, direct.size()))) << "at the threshold the bf16 path runs";
      EXPECT_FALSE(same_bits(a, b));
      EXPECT_LE(relative_error(b, ref), kTolerance);
    }
  }
}

TEST(Bf16TensorCore, ConvertOnceMultiplyTwice) {
  // kBf16TcConvert then kBf16TcMultiply (twice, on the same converted operands) gives the bits of
  // the one-call path.
  const int64_t groups = 4, per_group = 256, in = 512, out = groups * per_group, rows = 200;
  const WoA w(out, in, 310);
  const DeviceBuffer<float> dx = to_device(random_floats(static_cast<size_t>(rows * groups * in), 1.0f, 311));
  LinearWorkspaces workspaces = make_workspaces(out, in, rows, groups * in);
  const cuda::LinearWorkspace tc = workspaces.tensor_cores(1);
  DeviceBuffer<float> y1 = poisoned(static_cast<size_t>(rows * out)), y2 = poisoned(y1.size()), y3 = poisoned(y1.size());
  EXPECT_EQ(cuda::bf16_tc_linear(w.view, dx.data(), groups * in, rows, y1.data(), out, per_group, tc, nullptr), rows);
  EXPECT_EQ(cuda::bf16_tc_linear(w.view, dx.data(), groups * in, rows, nullptr, out, per_group, tc, nullptr,
                                 cuda::kBf16TcConvert),
            rows);
  EXPECT_EQ(cuda::bf16_tc_linear(w.view, nullptr, groups * in, rows, y2.data(), out, per_group, tc, nullptr,
                                 cuda::kBf16TcMultiply),
            rows);
  EXPECT_EQ(cuda::bf16_tc_linear(w.view, nullptr, groups * in, rows, y3.data(), out, per_group, tc, nullptr,
                                 cuda::kBf16TcMultiply),
            rows);
  const std::vector<float> a = download(y1, y1.size());
  EXPECT_TRUE(same_bits(a, download(y2, y2.size())));
  EXPECT_TRUE(same_bits(a, download(y3, y3.size())));
}

TEST(Bf16TensorCore, FallsBackToTheFp32Kernels) {
  // Without bf16 scratch, with too little, or with an activation stride the 16-byte loads cannot
  // take, a grouped fp8 call in the fast mode runs the fp32 kernels (their bits), not the fp8
  // tensor-core path.
  struct Case {
    int scratch;  // 0: none, 1: for 8 rows too few, 2: enough
    int64_t x_pad;
  };
  const int64_t groups = 4, per_group = 128, in = 512, out = groups * per_group, rows = 96;
  for (const Case c : {Case{0, 0}, Case{1, 0}, Case{2, 1}}) {
    const WoA w(out, in, 320);
    const int64_t x_stride = groups * in + c.x_pad;
    const DeviceBuffer<float> dx = to_device(random_floats(static_cast<size_t>(rows * x_stride), 1.0f, 321));
    LinearWorkspaces workspaces = make_workspaces(out, in, c.scratch == 1 ? rows - 8 : rows, groups * in);
    cuda::LinearWorkspace tc = workspaces.tensor_cores(64);
    if (c.scratch == 0) tc.bf16_scratch = nullptr;
    DeviceBuffer<float> y = poisoned(static_cast<size_t>(rows * out)), simt = poisoned(y.size());
    EXPECT_EQ(cuda::bf16_tc_linear(w.view, dx.data(), x_stride, rows, y.data(), out, per_group, tc, nullptr), 0);
    cuda::linear(w.view, dx.data(), x_stride, rows, y.data(), out, per_group, tc, nullptr);
    cuda::linear(w.view, dx.data(), x_stride, rows, simt.data(), out, per_group, workspaces.simt(), nullptr);
    EXPECT_TRUE(same_bits(download(y, y.size()), download(simt, simt.size())))
        << "scratch " << c.scratch << " x_pad " << c.x_pad;
  }
}

}  // namespace
}  // namespace longctx

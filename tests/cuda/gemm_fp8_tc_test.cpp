// The fp8 tensor-core path of linear() (gemm_fp8_tc.h) against the CPU reference linear, on
// random fp8 weights (every e4m3 code, random 128x128 scales) and fp8-simulated activations, as
// the backend passes them: the values multiplied are exactly the reference's, only the
// summation differs (fp8 tensor-core products, fp32 promotion per 128-deep K block).
//
// Tolerance: max |y - ref| / max |ref| <= 2e-3. Measured on an H100 (2026-11-23): 2.6e-4 to
// 3.6e-4 for the plain shapes, 4.2e-4 and 6.1e-4 for the grouped wo_a (the tensor cores' fp8
// products accumulate in reduced precision within a 128-deep block). Activations that are not
// fp8-simulated (the grouped wo_a's, which the reference keeps in bf16) are quantized by the path
// itself: that error is the fp8 rounding of the activations, measured 2.6e-2 and 3.7e-2, bounded
// here by 6e-2.
#include <gtest/gtest.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/block_quant.h"
#include "cpu/cpu_linear.h"
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

constexpr double kTolerance = 2e-3;
constexpr double kUnsimulatedTolerance = 6e-2;

struct Fp8Weight : RandomDeviceLinear {
  Fp8Weight(int64_t out, int64_t in, uint32_t seed, bool quantize_activations = true)
      : RandomDeviceLinear(WeightFormat::kFP8, out, in, seed, quantize_activations) {}
};

// The backend's scratch for calls of up to `rows` rows of `width` floats.
LinearWorkspaces make_workspaces(int64_t rows, int64_t width) {
  return LinearWorkspaces({.fp8 = cuda::fp8_tc_scratch_bytes(rows, width)});
}

// Random N(0, 1) activations, fp8-simulated per row in blocks of 128 (what fp8_simulate_rows
// gives the linear), at row stride `stride`.
std::vector<float> simulated_rows(int64_t rows, int64_t cols, int64_t stride, uint32_t seed) {
  std::vector<float> x = random_floats(static_cast<size_t>(rows * stride), 1.0f, seed);
  for (int64_t r = 0; r < rows; ++r) fp8_simulate_blocks(x.data() + r * stride, static_cast<size_t>(cols), 128);
  return x;
}

TEST(Fp8TensorCore, MatchesCpuReference) {
  struct Case {
    int64_t out, in, rows, x_pad, y_pad;
  };
  // Rows not a multiple of any tile (777, 1000, 203: rows % 4 go to the fp32 kernels), padded
  // strides, K of 1 to 8 x 512, out not a multiple of 128 (336).
  const Case cases[] = {{512, 1024, 512, 0, 0},  {1024, 4096, 777, 128, 4}, {2048, 2048, 1000, 0, 0},
                        {4096, 512, 64, 0, 12}, {336, 1536, 203, 512, 0}};
  LinearWorkspaces workspaces = make_workspaces(1000, 4096 + 128);
  uint32_t seed = 40;
  for (const Case& c : cases) {
    const Fp8Weight w(c.out, c.in, seed++);
    const int64_t x_stride = c.in + c.x_pad, y_stride = c.out + c.y_pad;
    const std::vector<float> x = simulated_rows(c.rows, c.in, x_stride, seed++);
    const DeviceBuffer<float> dx = to_device(x);
    const cuda::LinearWorkspace tc = workspaces.tensor_cores(64);
    DeviceBuffer<float> dy = poisoned(static_cast<size_t>(c.rows * y_stride));
    cuda::linear(w.view, dx.data(), x_stride, c.rows, dy.data(), y_stride, 0, tc, nullptr);
    const std::vector<float> y = packed(download(dy, dy.size()), c.rows, c.out, y_stride);
    // The tensor cores take all rows but rows % 4 (linear() gives those to the fp32 kernels),
    // with the bits linear() returned.
    const int64_t tc_rows = c.rows / 4 * 4;
    DeviceBuffer<float> dy2 = poisoned(dy.size());
    ASSERT_EQ(cuda::fp8_tc_linear(w.view, dx.data(), x_stride, c.rows, dy2.data(), y_stride, 0, tc, nullptr), tc_rows)
        << c.out << " x " << c.in;
    const std::vector<float> y2 = packed(download(dy2, dy2.size()), c.rows, c.out, y_stride);
    EXPECT_TRUE(std::equal(y.begin(), y.begin() + tc_rows * c.out, y2.begin(),
                           [](float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }));
    std::vector<float> ref(static_cast<size_t>(c.rows * c.out));
    cpu::linear(w.host.w, packed(x, c.rows, c.in, x_stride).data(), c.rows, ref.data());
    const double error = relative_error(y, ref);
    std::printf("fp8 tensor cores [%lld x %lld] rows %lld: relative error %.3g\n", static_cast<long long>(c.out),
                static_cast<long long>(c.in), static_cast<long long>(c.rows), error);
    EXPECT_LE(error, kTolerance) << c.out << " x " << c.in << " rows " << c.rows;  // NaN fails too
  }
}

TEST(Fp8TensorCore, GroupedWoA) {
  // 8 groups as in V4's wo_a (o / per_group picks the input slice), smaller per group.
  const int64_t groups = 8, in = 512, rows = 300;
  LinearWorkspaces workspaces = make_workspaces(rows, groups * in);
  for (const int64_t per_group : {128, 256}) {
    for (const bool simulated : {true, false}) {
      const Fp8Weight w(groups * per_group, in, static_cast<uint32_t>(60 + per_group), simulated);
      const std::vector<float> x = simulated
                                       ? simulated_rows(rows, groups * in, groups * in, 61)
                                       : random_floats(static_cast<size_t>(rows * groups * in), 1.0f, 61);
      const DeviceBuffer<float> dx = to_device(x);
      DeviceBuffer<float> dy = poisoned(static_cast<size_t>(rows * groups * per_group));
      const cuda::LinearWorkspace tc = workspaces.tensor_cores(64);
      ASSERT_EQ(cuda::fp8_tc_linear(w.view, dx.data(), groups * in, rows, dy.data(), groups * per_group, per_group,
                                    tc, nullptr),
                rows);
      std::vector<float> ref(dy.size());
      cpu::linear_grouped(w.host.w, groups, x.data(), rows, ref.data());
      const double error = relative_error(download(dy, dy.size()), ref);
      std::printf("fp8 tensor cores, grouped wo_a %lld x [%lld x %lld] rows %lld, %s activations: relative error %.3g\n",
                  static_cast<long long>(groups), static_cast<long long>(per_group), static_cast<long long>(in),
                  static_cast<long long>(rows), simulated ? "fp8-simulated" : "fp32", error);
      EXPECT_LE(error, simulated ? kTolerance : kUnsimulatedTolerance) << per_group;
    }
  }
}

TEST(Fp8TensorCore, QuantizeOnceMultiplyTwice) {
  // kFp8TcQuantize then kFp8TcMultiply (twice, reusing the quantized activations) gives the bits
  // of the one-call path.
  const int64_t out = 512, in = 1024, rows = 256;
  const Fp8Weight w(out, in, 90);
  const DeviceBuffer<float> dx = to_device(simulated_rows(rows, in, in, 91));
  LinearWorkspaces workspaces = make_workspaces(rows, in);
  const cuda::LinearWorkspace tc = workspaces.tensor_cores(64);
  DeviceBuffer<float> y1 = poisoned(static_cast<size_t>(rows * out)), y2 = poisoned(y1.size()), y3 = poisoned(y1.size());
  EXPECT_EQ(cuda::fp8_tc_linear(w.view, dx.data(), in, rows, y1.data(), out, 0, tc, nullptr), rows);
  EXPECT_EQ(cuda::fp8_tc_linear(w.view, dx.data(), in, rows, nullptr, out, 0, tc, nullptr, cuda::kFp8TcQuantize), rows);
  EXPECT_EQ(cuda::fp8_tc_linear(w.view, nullptr, in, rows, y2.data(), out, 0, tc, nullptr, cuda::kFp8TcMultiply), rows);
  EXPECT_EQ(cuda::fp8_tc_linear(w.view, nullptr, in, rows, y3.data(), out, 0, tc, nullptr, cuda::kFp8TcMultiply), rows);
  const std::vector<float> a = download(y1, y1.size());
  EXPECT_TRUE(same_bits(a, download(y2, y2.size())));
  EXPECT_TRUE(same_bits(a, download(y3, y3.size())));
}

TEST(Fp8TensorCore, DispatchThreshold) {
  const int64_t out = 1024, in = 1024, min_rows = 64;
  const Fp8Weight w(out, in, 70);
  const std::vector<float> x = simulated_rows(min_rows, in, in, 71);
  const DeviceBuffer<float> dx = to_device(x);
  LinearWorkspaces workspaces = make_workspaces(min_rows, in);
  for (const int64_t rows : {min_rows - 1, min_rows}) {
    DeviceBuffer<float> simt = poisoned(static_cast<size_t>(rows * out)), tc = poisoned(simt.size()),
                        off = poisoned(simt.size());
    cuda::linear(w.view, dx.data(), in, rows, simt.data(), out, 0, workspaces.simt(), nullptr);
    cuda::linear(w.view, dx.data(), in, rows, tc.data(), out, 0, workspaces.tensor_cores(min_rows), nullptr);
    // tensor_core_min_rows == 0 with the scratch in place: the fp32 kernels, their bits.
    cuda::linear(w.view, dx.data(), in, rows, off.data(), out, 0, workspaces.tensor_cores(0), nullptr);
    const std::vector<float> a = download(simt, simt.size()), b = download(tc, tc.size());
    EXPECT_TRUE(same_bits(a, download(off, off.size()))) << "rows " << rows;
    if (rows < min_rows) {
      EXPECT_TRUE(same_bits(a, b)) << "below the threshold the fp32 kernels run";
    } else {
      EXPECT_FALSE(same_bits(a, b)) << "at the threshold the tensor cores run (another summation order)";
      std::vector<float> ref(a.size());
      cpu::linear(w.host.w, x.data(), rows, ref.data());
      EXPECT_LE(relative_error(b, ref), kTolerance);
      EXPECT_LE(relative_error(a, ref), 1e-5);
    }
  }
}

TEST(Fp8TensorCore, FallsBackWhereItCannot) {
  // in not a multiple of 512, out not a multiple of 16, too little scratch: the fp32 kernels.
  struct Case {
    int64_t out, in;
    bool small_scratch;
  };
  for (const Case c : {Case{256, 640, false}, Case{200, 512, false}, Case{256, 512, true}}) {
    const int64_t rows = 96;
    const Fp8Weight w(c.out, c.in, 80);
    const std::vector<float> x = simulated_rows(rows, c.in, c.in, 81);
    const DeviceBuffer<float> dx = to_device(x);
    LinearWorkspaces workspaces = make_workspaces(c.small_scratch ? rows - 8 : rows, c.in);
    const cuda::LinearWorkspace tc = workspaces.tensor_cores(64);
    DeviceBuffer<float> y = poisoned(static_cast<size_t>(rows * c.out)), simt = poisoned(y.size());
    EXPECT_EQ(cuda::fp8_tc_linear(w.view, dx.data(), c.in, rows, y.data(), c.out, 0, tc, nullptr), 0);
    cuda::linear(w.view, dx.data(), c.in, rows, y.data(), c.out, 0, tc, nullptr);
    cuda::linear(w.view, dx.data(), c.in, rows, simt.data(), c.out, 0, workspaces.simt(), nullptr);
    EXPECT_TRUE(same_bits(download(y, y.size()), download(simt, simt.size()))) << c.out << " x " << c.in;
  }
}

}  // namespace
}  // namespace longctx

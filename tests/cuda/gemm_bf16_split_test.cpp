// The bf16-weight path of linear() (gemm_bf16_split.h: fp32 activations split into three bf16
// terms on bf16 tensor cores) against the CPU reference (cpu::linear, fp32) and a float64
// reference, on random bf16 weights (N(0, 0.05)) and activations N(0, 1) x 2^e with e uniform in
// [-12, 12] (x spans 25 binades) or plain N(0, 1).
//
// Errors are max |y - ref| / max |ref|. Measured on an H100 (2026-11-23) over the shapes below,
// hi's K slices of 512 (kBf16SplitKChunk), against float64 (the fp32 CPU reference: 0.6e-7 to
// 5.9e-7 at K = 4096):
//  - three terms: 0.6e-7 to 7.4e-7, bound kTolerance = 1.5e-6 (also against the fp32 CPU
//    reference). One GEMM over all of K gives 1.8e-6 to 5.4e-6 at K = 4096 (the tensor cores'
//    accumulation; see gemm_bf16_split.h), which this bound catches;
//  - two terms (x carried to ~17 bits): 2.1e-6 to 3.5e-6, ~5x the fp32 kernels' error
//    (kTwoTermsTolerance = 1e-5 bounds the measurement, which the test prints).
// An identity weight returns x bit for bit (the terms add up to x exactly) for |x| in
// [2^-100, 2^100], zeros and fp32 extremes within bf16's range included.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "common/float_formats.h"
#include "cpu/cpu_linear.h"
#include "cuda/gemm_bf16_split.h"
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
using cuda_test::HostLinear;
using cuda_test::packed;
using cuda_test::poisoned;
using cuda_test::random_linear;
using cuda_test::relative_error;
using cuda_test::same_bits;

constexpr double kTolerance = 1.5e-6;
constexpr double kTwoTermsTolerance = 1e-5;

struct Bf16Weight : RandomDeviceLinear {
  Bf16Weight(int64_t out, int64_t in, uint32_t seed) : RandomDeviceLinear(WeightFormat::kBF16, out, in, seed) {}
};

// x [rows, stride]: N(0, 1) x 2^e, e uniform in [-spread, spread].
std::vector<float> binade_floats(size_t n, int spread, uint32_t seed) {
  std::mt19937 random(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-spread, spread);
  std::vector<float> values(n);
  for (float& v : values) v = std::ldexp(normal(random), exponent(random));
  return values;
}

// y = x W^T in float64 (x packed [rows, in]).
std::vector<float> reference64(const HostLinear& w, const std::vector<float>& x, int64_t rows) {
  const int64_t out = w.w.out, in = w.w.in;
  std::vector<double> weight(static_cast<size_t>(out * in));
  for (size_t i = 0; i < weight.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, w.weight.data() + 2 * i, 2);
    weight[i] = bf16_to_float(bits);
  }
  std::vector<float> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double sum = 0;
      for (int64_t k = 0; k < in; ++k) sum += static_cast<double>(x[r * in + k]) * weight[o * in + k];
      y[r * out + o] = static_cast<float>(sum);
    }
  }
  return y;
}

LinearWorkspaces make_workspaces(int64_t rows, int64_t in) {
  return LinearWorkspaces({.split = cuda::bf16_split_scratch_bytes(rows, in)});
}

TEST(Bf16Split, MatchesCpuReference) {
  struct Case {
    int64_t out, in, rows, x_pad, y_pad;
    int spread;  // 0: N(0, 1)
  };
  // V4-Flash's shapes (hidden 4096: compressor wkv / wgate 1024 and 512, indexer compressor 256,
  // weights_proj 64, gate 256), a call of more rows than one pass (two passes, the second
  // short), and odd shapes: in not a multiple of 8 or 16 (1000, 300, 97), rows not a multiple of
  // 4 or 16, out not a multiple of 16 (100, 33, 7), padded strides (x_pad 3: the element-wise
  // split; y_pad 1: y rows only 4-byte aligned).
  const Case cases[] = {{1024, 4096, 333, 0, 0, 12},  {512, 4096, 130, 0, 0, 12},
                        {256, 4096, 517, 4, 8, 12},   {64, 4096, 1000, 0, 0, 0},
                        {256, 4096, 77, 0, 0, 12},    {64, 256, cuda::kBf16SplitPassRows + 37, 0, 0, 12},
                        {100, 1000, 61, 0, 0, 12},    {33, 300, 13, 3, 1, 12},
                        {7, 97, 5, 0, 0, 12},         {48, 64, 1, 0, 0, 0}};
  uint32_t seed = 500;
  for (const Case& c : cases) {
    const Bf16Weight w(c.out, c.in, seed++);
    const int64_t x_stride = c.in + c.x_pad, y_stride = c.out + c.y_pad;
    const std::vector<float> x = c.spread > 0 ? binade_floats(static_cast<size_t>(c.rows * x_stride), c.spread, seed++)
                                              : cuda_test::random_floats(static_cast<size_t>(c.rows * x_stride), 1.0f,
                                                                         seed++);
    const DeviceBuffer<float> dx = to_device(x);
    LinearWorkspaces workspaces = make_workspaces(c.rows, c.in);
    const cuda::LinearWorkspace tc = workspaces.tensor_cores(1);
    DeviceBuffer<float> dy = poisoned(static_cast<size_t>(c.rows * y_stride)), dy2 = poisoned(dy.size());
    ASSERT_EQ(cuda::bf16_split_linear(w.view, dx.data(), x_stride, c.rows, dy.data(), y_stride, tc, nullptr),
              c.rows)
        << c.out << " x " << c.in;
    ASSERT_EQ(cuda::bf16_split_linear(w.view, dx.data(), x_stride, c.rows, dy2.data(), y_stride, tc, nullptr, 2),
              c.rows);
    const std::vector<float> y = packed(download(dy, dy.size()), c.rows, c.out, y_stride);
    const std::vector<float> y2 = packed(download(dy2, dy2.size()), c.rows, c.out, y_stride);
    // hi's K slices of 256, 1024 and all of K (the default is kBf16SplitKChunk).
    std::vector<std::vector<float>> sliced;
    for (const int64_t k_chunk : {int64_t{256}, int64_t{1024}, c.in}) {
      DeviceBuffer<float> dys = poisoned(dy.size());
      EXPECT_EQ(cuda::bf16_split_linear(w.view, dx.data(), x_stride, c.rows, dys.data(), y_stride, tc, nullptr,
                                        cuda::kBf16SplitTerms, cuda::kBf16SplitAll, (k_chunk + 7) / 8 * 8),
                c.rows);
      sliced.push_back(packed(download(dys, dys.size()), c.rows, c.out, y_stride));
    }
    if (c.in % 32 == 0 && c.out >= cuda::kBf16SplitMinOutputs) {
      // linear() takes this path (the fp32 kernels need in % 32 == 0 for the comparison).
      DeviceBuffer<float> dy3 = poisoned(dy.size());
      cuda::linear(w.view, dx.data(), x_stride, c.rows, dy3.data(), y_stride, 0, tc, nullptr);
      EXPECT_TRUE(same_bits(y, packed(download(dy3, dy3.size()), c.rows, c.out, y_stride)));
    }

    const std::vector<float> x_packed = packed(x, c.rows, c.in, x_stride);
    std::vector<float> ref(y.size());
    cpu::linear(w.host.w, x_packed.data(), c.rows, ref.data());
    const std::vector<float> ref64 = reference64(w.host, x_packed, c.rows);
    const double error = relative_error(y, ref), error64 = relative_error(y, ref64);
    const double cpu64 = relative_error(ref, ref64), two64 = relative_error(y2, ref64);
    std::printf("bf16 split [%lld x %lld] rows %lld%s: vs fp32 CPU %.3g, vs float64 %.3g (fp32 CPU vs float64 "
                "%.3g); two terms vs float64 %.3g; hi slices 256 / 1024 / all K vs float64 %.3g / %.3g / %.3g\n",
                static_cast<long long>(c.out), static_cast<long long>(c.in), static_cast<long long>(c.rows),
                c.spread > 0 ? " (x over 25 binades)" : "", error, error64, cpu64, two64,
                relative_error(sliced[0], ref64), relative_error(sliced[1], ref64), relative_error(sliced[2], ref64));
    EXPECT_LE(error, kTolerance) << c.out << " x " << c.in << " rows " << c.rows;  // NaN fails too
    EXPECT_LE(error64, kTolerance) << c.out << " x " << c.in << " rows " << c.rows;
    EXPECT_LE(two64, kTwoTermsTolerance) << c.out << " x " << c.in << " rows " << c.rows;
  }
}

TEST(Bf16Split, IdentityWeightReturnsX) {
  // W = I (bf16 1.0 exactly): each output is lo + mid + hi of one input (plus zero products),
  // which add up to x exactly. x over [2^-100, 2^100], zeros, and the largest / smallest
  // normal fp32 values that bf16 rounding keeps finite.
  const int64_t in = 256, rows = 64;
  HostLinear host;
  host.w.format = WeightFormat::kBF16;
  host.w.out = in;
  host.w.in = in;
  host.weight.assign(static_cast<size_t>(in * in * 2), 0);
  const uint16_t one = float_to_bf16(1.0f);
  for (int64_t i = 0; i < in; ++i) std::memcpy(host.weight.data() + 2 * (i * in + i), &one, 2);
  const DeviceBuffer<uint8_t> weight = to_device(host.weight);
  const cuda::LinearView view{weight.data(), nullptr, cuda::kWeightBF16, in, in, 0, 0};

  std::mt19937 random(600);
  std::uniform_int_distribution<uint32_t> mantissa(0, (1u << 23) - 1);
  std::uniform_int_distribution<int> exponent(-100, 100);
  std::vector<float> x(static_cast<size_t>(rows * in));
  for (float& v : x) {
    const float m = 1.0f + static_cast<float>(mantissa(random)) * 0x1p-23f;  // all 24 bits random
    v = std::ldexp(random() % 2 ? m : -m, exponent(random));
  }
  x[0] = 0.0f;
  x[1] = -0.0f;
  x[2] = 0x1.fdfffep127f;  // just under bf16's largest finite value after rounding
  x[3] = -0x1.fdfffep127f;
  x[4] = 0x1.000002p-100f;
  const DeviceBuffer<float> dx = to_device(x);
  LinearWorkspaces workspaces = make_workspaces(rows, in);
  DeviceBuffer<float> dy = poisoned(x.size());
  ASSERT_EQ(cuda::bf16_split_linear(view, dx.data(), in, rows, dy.data(), in, workspaces.tensor_cores(1), nullptr),
            rows);
  const std::vector<float> y = download(dy, dy.size());
  int wrong = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    // -0 comes back +0 (a sum of zero products); values compare equal.
    if (y[i] != x[i]) {
      if (++wrong <= 5) std::printf("x %a -> y %a\n", static_cast<double>(x[i]), static_cast<double>(y[i]));
    }
  }
  EXPECT_EQ(wrong, 0);
}

TEST(Bf16Split, DispatchThreshold) {
  // Below tensor_core_min_rows, and with tensor_core_min_rows == 0 (batch-invariant mode, scratch
  // in place), the fp32 kernels' bits; at the threshold the split path's. A grouped call (bf16
  // wo_a) and a weight narrower than kBf16SplitMinOutputs never take it.
  const int64_t out = 256, in = 512, min_rows = 67;
  const Bf16Weight w(out, in, 610);
  const std::vector<float> x = binade_floats(static_cast<size_t>(min_rows * in), 8, 611);
  const DeviceBuffer<float> dx = to_device(x);
  LinearWorkspaces workspaces = make_workspaces(min_rows, in);
  for (const int64_t rows : {min_rows - 1, min_rows}) {
    DeviceBuffer<float> simt = poisoned(static_cast<size_t>(rows * out)), tc = poisoned(simt.size()),
                        off = poisoned(simt.size()), direct = poisoned(simt.size());
    cuda::linear(w.view, dx.data(), in, rows, simt.data(), out, 0, workspaces.simt(), nullptr);
    cuda::linear(w.view, dx.data(), in, rows, tc.data(), out, 0, workspaces.tensor_cores(min_rows), nullptr);
    cuda::linear(w.view, dx.data(), in, rows, off.data(), out, 0, workspaces.tensor_cores(0), nullptr);
    ASSERT_EQ(cuda::bf16_split_linear(w.view, dx.data(), in, rows, direct.data(), out,
                                      workspaces.tensor_cores(min_rows), nullptr),
              rows);
    const std::vector<float> a = download(simt, simt.size()), b = download(tc, tc.size());
    EXPECT_TRUE(same_bits(a, download(off, off.size()))) << "rows " << rows;
    std::vector<float> ref(a.size());
    cpu::linear(w.host.w, x.data(), rows, ref.data());
    EXPECT_LE(relative_error(a, ref), kTolerance);
    if (rows < min_rows) {
      EXPECT_TRUE(same_bits(a, b)) << "below the threshold the fp32 kernels run";
    } else {
      EXPECT_TRUE(same_bits(b, download(direct, direct.size()))) << "at the threshold the split path runs";
      EXPECT_FALSE(same_bits(a, b));
      EXPECT_LE(relative_error(b, ref), kTolerance);
    }
  }
  // Grouped (x_group_outputs > 0): the fp32 kernels' bits.
  const int64_t per_group = 64, groups = out / per_group, rows = min_rows;
  const DeviceBuffer<float> gx = to_device(binade_floats(static_cast<size_t>(rows * groups * in), 8, 612));
  DeviceBuffer<float> simt = poisoned(static_cast<size_t>(rows * out)), tc = poisoned(simt.size());
  cuda::linear(w.view, gx.data(), groups * in, rows, simt.data(), out, per_group, workspaces.simt(), nullptr);
  cuda::linear(w.view, gx.data(), groups * in, rows, tc.data(), out, per_group, workspaces.tensor_cores(1), nullptr);
  EXPECT_TRUE(same_bits(download(simt, simt.size()), download(tc, tc.size())));
  // Narrower than kBf16SplitMinOutputs (the 8-expert gate): the fp32 kernels' bits.
  const Bf16Weight narrow(cuda::kBf16SplitMinOutputs - 8, in, 613);
  DeviceBuffer<float> narrow_simt = poisoned(static_cast<size_t>(rows * narrow.view.out)),
                      narrow_tc = poisoned(narrow_simt.size());
  cuda::linear(narrow.view, dx.data(), in, rows, narrow_simt.data(), narrow.view.out, 0, workspaces.simt(), nullptr);
  cuda::linear(narrow.view, dx.data(), in, rows, narrow_tc.data(), narrow.view.out, 0, workspaces.tensor_cores(1),
               nullptr);
  EXPECT_TRUE(same_bits(download(narrow_simt, narrow_simt.size()), download(narrow_tc, narrow_tc.size())));
}

TEST(Bf16Split, SplitOnceMultiplyTwiceAndFallbacks) {
  // kBf16SplitConvert then kBf16SplitMultiply (twice) gives the bits of the one-call path.
  // Without scratch, or with too little, the call declines (0 rows, nothing written) and
  // linear() runs the fp32 kernels.
  const int64_t out = 128, in = 1024, rows = 200;
  const Bf16Weight w(out, in, 620);
  const std::vector<float> x = binade_floats(static_cast<size_t>(rows * in), 8, 621);
  const DeviceBuffer<float> dx = to_device(x);
  LinearWorkspaces workspaces = make_workspaces(rows, in);
  const cuda::LinearWorkspace tc = workspaces.tensor_cores(1);
  DeviceBuffer<float> y1 = poisoned(static_cast<size_t>(rows * out)), y2 = poisoned(y1.size()), y3 = poisoned(y1.size());
  EXPECT_EQ(cuda::bf16_split_linear(w.view, dx.data(), in, rows, y1.data(), out, tc, nullptr), rows);
  EXPECT_EQ(cuda::bf16_split_linear(w.view, dx.data(), in, rows, nullptr, out, tc, nullptr, cuda::kBf16SplitTerms,
                                    cuda::kBf16SplitConvert),
            rows);
  EXPECT_EQ(cuda::bf16_split_linear(w.view, nullptr, in, rows, y2.data(), out, tc, nullptr, cuda::kBf16SplitTerms,
                                    cuda::kBf16SplitMultiply),
            rows);
  EXPECT_EQ(cuda::bf16_split_linear(w.view, nullptr, in, rows, y3.data(), out, tc, nullptr, cuda::kBf16SplitTerms,
                                    cuda::kBf16SplitMultiply),
            rows);
  const std::vector<float> a = download(y1, y1.size());
  EXPECT_TRUE(same_bits(a, download(y2, y2.size())));
  EXPECT_TRUE(same_bits(a, download(y3, y3.size())));

  DeviceBuffer<float> simt = poisoned(y1.size());
  cuda::linear(w.view, dx.data(), in, rows, simt.data(), out, 0, workspaces.simt(), nullptr);
  const std::vector<float> expected = download(simt, simt.size());
  for (const int scratch : {0, 1}) {  // none; room for rows - 8 rows
    LinearWorkspaces small = make_workspaces(rows - 8, in);
    cuda::LinearWorkspace ws = scratch == 0 ? workspaces.tensor_cores(1) : small.tensor_cores(1);
    if (scratch == 0) ws.split_scratch = nullptr;
    DeviceBuffer<float> y = poisoned(y1.size()), direct = poisoned(y1.size());
    EXPECT_EQ(cuda::bf16_split_linear(w.view, dx.data(), in, rows, direct.data(), out, ws, nullptr), 0);
    cuda::linear(w.view, dx.data(), in, rows, y.data(), out, 0, ws, nullptr);
    EXPECT_TRUE(same_bits(expected, download(y, y.size()))) << "scratch " << scratch;
    const std::vector<float> untouched = download(direct, direct.size());
    EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](float v) { return std::isnan(v); }));
  }
}

}  // namespace
}  // namespace longctx

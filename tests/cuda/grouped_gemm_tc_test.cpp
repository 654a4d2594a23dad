// The tensor-core path of grouped_linear (src/cuda/grouped_gemm_tc.cu) against the CPU reference
// op, and its dispatch.
//
// Tolerance: the reference computes the same exact e4m3 x (fp4|fp8) products (the activations
// are fp8-simulated first, as the caller does) and sums them in fp32 sequentially; the tensor
// cores sum each 128-block inside the MMA unit and the blocks are promoted in fp32, so only the
// summation differs. The wgmma fp8 unit (QGMMA) accumulates with fewer bits than fp32 (the
// reason the reference's fp8 GEMM promotes every 128): measured max |y - ref| / max |ref| on the
// H100 3.4e-4 (fp4 2.97e-4..3.1e-4, fp8 2.7e-4..3.4e-4; 1.2e-4 in the scale-spread test), so
// 1e-3. The mma.sync variant (LONGCTX_CUDA_TC_MMA_SYNC=1, run on fp16 HMMA) measured 1.4e-7.
// fp4 experts are converted to e4m3 inside the GEMM or by a conversion pass (Fp4Conversion);
// the two must give the same bits: compared bitwise on the device (a host emulation could check the
// codes but not the tensor cores' accumulation, whose bits are the point).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>

#include "common/block_quant.h"
#include "cpu/cpu_linear.h"
#include "cuda/kernels.h"
#include "test_util.h"

namespace longctx {
namespace {

using cuda::DeviceBuffer;
using cuda::to_device;
using cuda_test::download;
using cuda_test::same_bits;
using cuda_test::HostLinear;
using cuda_test::random_floats;
using cuda_test::random_linear;
using cuda_test::relative_error;

constexpr double kTolerance = 1e-3;
constexpr cuda::Fp4Conversion kInGemm = cuda::Fp4Conversion::kInGemm;
constexpr cuda::Fp4Conversion kPass = cuda::Fp4Conversion::kPass;

// Stacked experts in stored format, on the host and the device.
struct Experts {
  std::vector<HostLinear> hosts;
  DeviceBuffer<uint8_t> weight, scale;
  cuda::LinearView view;

  Experts(WeightFormat format, int count, int64_t out, int64_t in, uint32_t seed) {
    std::vector<uint8_t> weights, scales;
    for (int e = 0; e < count; ++e) {
      hosts.push_back(random_linear(format, out, in, seed + static_cast<uint32_t>(e), true));
      weights.insert(weights.end(), hosts.back().weight.begin(), hosts.back().weight.end());
      scales.insert(scales.end(), hosts.back().scale.begin(), hosts.back().scale.end());
    }
    weight = to_device(weights);
    if (!scales.empty()) scale = to_device(scales);
    view = {weight.data(), scale.data(), static_cast<int>(format), out, in,
            static_cast<int64_t>(hosts[0].weight.size()), static_cast<int64_t>(hosts[0].scale.size())};
  }
  // fp4: in every 128-block of output `o`, 32-block 1 gets exponent `top` and the other three
  // top - spread.
  void spread_scales(int64_t o, int spread, int top = 120) {
    const int64_t in = hosts[0].w.in;
    for (size_t e = 0; e < hosts.size(); ++e) {
      uint8_t* s = hosts[e].scale.data() + o * (in / 32);
      for (int64_t b = 0; b < in / 32; ++b) s[b] = static_cast<uint8_t>(b % 4 == 1 ? top : top - spread);
    }
    upload_scales();
  }
  void upload_scales() {
    std::vector<uint8_t> scales;
    for (const HostLinear& h : hosts) scales.insert(scales.end(), h.scale.begin(), h.scale.end());
    scale = to_device(scales);
    view.scale = scale.data();
  }
};

// Slots grouped by expert: counts per expert (zeros allowed), slot s reads token rows[s].
struct Routing {
  std::vector<int32_t> offsets, counts, rows, busy;
  int64_t tokens = 0;
  DeviceBuffer<int32_t> d_offsets, d_counts, d_rows, d_busy;

  Routing(const std::vector<int32_t>& per_expert, int64_t token_count, uint32_t seed) : tokens(token_count) {
    std::mt19937 random(seed);
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(token_count - 1));
    for (size_t e = 0; e < per_expert.size(); ++e) {
      offsets.push_back(static_cast<int32_t>(rows.size()));
      counts.push_back(per_expert[e]);
      if (per_expert[e] > 0) busy.push_back(static_cast<int32_t>(e));
      for (int32_t i = 0; i < per_expert[e]; ++i) rows.push_back(token(random));
    }
    busy.resize(per_expert.size(), -1);
    d_offsets = to_device(offsets);
    d_counts = to_device(counts);
    d_rows = to_device(rows);
    d_busy = to_device(busy);
  }
  int64_t slots() const { return static_cast<int64_t>(rows.size()); }
};

// y [slots, out] of the CPU reference (fp8-simulated activations, exact stored weights).
std::vector<float> reference(const Experts& experts, const Routing& routing, const std::vector<float>& x) {
  const int64_t out = experts.view.out, in = experts.view.in;
  std::vector<float> y(static_cast<size_t>(routing.slots() * out));
  for (size_t e = 0; e < routing.counts.size(); ++e) {
    const int64_t count = routing.counts[e];
    if (count == 0) continue;
    std::vector<float> gathered(static_cast<size_t>(count * in));
    for (int64_t i = 0; i < count; ++i) {
      std::copy_n(x.begin() + routing.rows[static_cast<size_t>(routing.offsets[e] + i)] * in, in,
                  gathered.begin() + i * in);
    }
    cpu::linear(experts.hosts[e].w, gathered.data(), count, y.data() + routing.offsets[e] * out);
  }
  return y;
}

struct Scratch {
  DeviceBuffer<float> partial{size_t{4} << 20};
  DeviceBuffer<uint8_t> tc;
  cuda::LinearWorkspace view(int min_rows, size_t tc_bytes) {
    if (tc.size() < tc_bytes) tc.resize(tc_bytes);
    cuda::LinearWorkspace w{partial.data(), partial.size(), 132};
    w.tensor_core_min_rows = min_rows;
    w.tc_scratch = tc_bytes > 0 ? tc.data() : nullptr;
    w.tc_scratch_bytes = tc_bytes;
    return w;
  }
};

std::vector<float> run(const Experts& experts, const Routing& routing, const DeviceBuffer<float>& x,
                       const cuda::LinearWorkspace& workspace, bool busy_list) {
  const int64_t out = experts.view.out;
  DeviceBuffer<float> y(static_cast<size_t>(routing.slots() * out));
  LONGCTX_CUDA_CHECK(cudaMemset(y.data(), 0xff, y.size() * sizeof(float)));  // NaN: unwritten
  cuda::grouped_linear(experts.view, static_cast<int>(routing.counts.size()), routing.d_offsets.data(),
                       routing.d_counts.data(), routing.slots(), x.data(), experts.view.in, routing.d_rows.data(),
                       y.data(), out, workspace, nullptr, busy_list ? routing.d_busy.data() : nullptr);
  LONGCTX_CUDA_CHECK(cudaGetLastError());
  return download(y, y.size());
}

// grouped_linear_tc itself, fp4 converted inside the GEMM or by the conversion pass; fails the
// test if the path declined.
std::vector<float> run_tc(const Experts& experts, const Routing& routing, const DeviceBuffer<float>& x,
                          const cuda::LinearWorkspace& workspace, bool busy_list, bool convert_fp4) {
  const cuda::Fp4Conversion mode = convert_fp4 ? cuda::Fp4Conversion::kPass : cuda::Fp4Conversion::kInGemm;
  const int64_t out = experts.view.out;
  DeviceBuffer<float> y = cuda_test::poisoned(static_cast<size_t>(routing.slots() * out));
  const bool ran = cuda::grouped_linear_tc(experts.view, static_cast<int>(routing.counts.size()),
                                           routing.d_offsets.data(), routing.d_counts.data(), routing.slots(),
                                           x.data(), experts.view.in, routing.d_rows.data(), y.data(), out, workspace,
                                           nullptr, busy_list ? routing.d_busy.data() : nullptr, mode);
  EXPECT_TRUE(ran) << "grouped_linear_tc declined" << (convert_fp4 ? " (conversion pass)" : "");
  LONGCTX_CUDA_CHECK(cudaGetLastError());
  return download(y, y.size());
}

size_t count_nan(const std::vector<float>& y) {
  return static_cast<size_t>(std::count_if(y.begin(), y.end(), [](float v) { return std::isnan(v); }));
}

// Activations as the caller passes them: fp8-simulated per row in blocks of 128.
std::vector<float> simulated_activations(int64_t tokens, int64_t in, uint32_t seed) {
  std::vector<float> x = random_floats(static_cast<size_t>(tokens * in), 1.0f, seed);
  for (int64_t t = 0; t < tokens; ++t) fp8_simulate_blocks(x.data() + t * in, static_cast<size_t>(in), 128);
  return x;
}

struct Case {
  WeightFormat format;
  int64_t out, in;
  std::vector<int32_t> per_expert;
  int64_t tokens;
};

TEST(CudaGroupedTc, MatchesCpuWithUnevenExpertsGatherAndBusyList) {
  Scratch scratch;
  const std::vector<Case> cases = {
      // uneven experts, empty ones, rows not a multiple of 128, outputs not a multiple of 128,
      // more K blocks than pipeline stages, more busy fp4 experts than one conversion batch
      {WeightFormat::kFP4, 320, 1024, {0, 300, 1, 129, 0, 517, 64, 7, 200, 3, 0, 128}, 700},
      {WeightFormat::kFP4, 256, 256, {5, 0, 0, 130}, 90},
      {WeightFormat::kFP8, 384, 640, {0, 250, 129, 1, 0, 333}, 500},
      {WeightFormat::kFP8, 136, 1024, {40, 300}, 200},
  };
  uint32_t seed = 1000;
  for (const Case& c : cases) {
    const int experts_count = static_cast<int>(c.per_expert.size());
    const Experts experts(c.format, experts_count, c.out, c.in, seed);
    const Routing routing(c.per_expert, c.tokens, seed + 1);
    const std::vector<float> x = simulated_activations(c.tokens, c.in, seed + 2);
    seed += 10;
    const DeviceBuffer<float> dx = to_device(x);
    const std::vector<float> ref = reference(experts, routing, x);
    const size_t bytes =
        cuda::grouped_linear_tc_scratch_bytes(experts.view, experts_count, routing.slots());
    const std::vector<float> old_path = run(experts, routing, dx, scratch.view(0, bytes), true);
    for (const bool busy_list : {false, true}) {
      const std::vector<float> y = run(experts, routing, dx, scratch.view(1, bytes), busy_list);
      const double error = relative_error(y, ref);
      std::printf("grouped tc %s [%lld x %lld], %lld slots%s: relative error %.3g (fp32 path %.3g)\n",
                  to_string(c.format), static_cast<long long>(c.out), static_cast<long long>(c.in),
                  static_cast<long long>(routing.slots()), busy_list ? ", busy list" : "", error,
                  relative_error(old_path, ref));
      EXPECT_LE(error, kTolerance) << to_string(c.format) << " " << c.out << "x" << c.in;
      EXPECT_FALSE(same_bits(y, old_path)) << "the tensor-core path did not run";
    }
    // fp4 through the conversion pass with scratch for only 3 converted experts at a time:
    // more batches, the same bits as in-GEMM conversion.
    if (c.format == WeightFormat::kFP4) {
      const size_t one = cuda::grouped_linear_tc_scratch_bytes(experts.view, 1, routing.slots(), kPass) -
                         cuda::grouped_linear_tc_scratch_bytes(experts.view, 0, routing.slots(), kPass);
      const size_t small = cuda::grouped_linear_tc_scratch_bytes(experts.view, 0, routing.slots(), kPass) + 3 * one;
      EXPECT_GT(one, 0u);
      const std::vector<float> a = run(experts, routing, dx, scratch.view(1, bytes), true);
      const std::vector<float> b = run_tc(experts, routing, dx, scratch.view(1, small), true, true);
      EXPECT_TRUE(same_bits(a, b)) << "batches of 3 converted experts";
    }
  }
}

TEST(CudaGroupedTc, Fp4ScaleSpreadWithinABlockStaysExact) {
  // Exponents up to 14 binades below the largest of their 128-block still fold into e4m3
  // exactly. The activations are zero on the large 32-blocks, so the outputs are made of the
  // small blocks alone: a lost or misplaced shift would show in full.
  Scratch scratch;
  const int64_t out = 128, in = 512;
  Experts experts(WeightFormat::kFP4, 2, out, in, 77);
  for (int64_t o = 0; o < out; o += 3) experts.spread_scales(o, static_cast<int>(o % 15));
  const Routing routing({150, 40}, 120, 78);
  std::vector<float> x = simulated_activations(routing.tokens, in, 79);
  for (size_t i = 0; i < x.size(); ++i) {
    if ((i % static_cast<size_t>(in)) / 32 % 4 == 1) x[i] = 0.0f;
  }
  const DeviceBuffer<float> dx = to_device(x);
  const std::vector<float> ref = reference(experts, routing, x);
  const size_t bytes = cuda::grouped_linear_tc_scratch_bytes(experts.view, 2, routing.slots());
  const std::vector<float> y = run(experts, routing, dx, scratch.view(1, bytes), true);
  // Per output row, relative to the row's own magnitude: the small blocks must not vanish.
  double worst = 0;
  for (int64_t o = 0; o < out; o += 3) {
    std::vector<float> yo, ro;
    for (int64_t s = 0; s < routing.slots(); ++s) {
      yo.push_back(y[static_cast<size_t>(s * out + o)]);
      ro.push_back(ref[static_cast<size_t>(s * out + o)]);
    }
    worst = std::max(worst, relative_error(yo, ro));
  }
  std::printf("grouped tc fp4, scale spread up to 14 binades: worst per-output relative error %.3g\n", worst);
  EXPECT_LE(worst, kTolerance);
}

TEST(CudaGroupedTc, Fp4InGemmConversionMatchesConversionPassBitwise) {
  // The routed experts' shapes (w1/w3 [inter x hidden], w2 [hidden x inter]) of Flash (hidden
  // 4096, inter 2048) and Pro (7168, 3072); ragged groups with empty ones, with and without the
  // busy list. LONGCTX_TEST_SMALL=1 (compute-sanitizer runs): Flash's w1 and a small shape.
  const char* small_env = std::getenv("LONGCTX_TEST_SMALL");
  const bool small = small_env != nullptr && small_env[0] == '1';
  struct Shape {
    const char* name;
    int64_t out, in;
    std::vector<int32_t> per_expert;
  };
  std::vector<Shape> shapes = {
      {"Flash w1", 2048, 4096, {0, 300, 1, 129, 0, 17, 64, 200, 0, 45}},
      {"small", 258, 128, {16, 0, 140, 3}},
  };
  if (!small) {
    shapes.push_back({"Flash w2", 4096, 2048, {77, 0, 0, 256, 31, 129, 8, 0, 190}});
    shapes.push_back({"Pro w1", 3072, 7168, {0, 211, 128, 1, 0, 90}});
    shapes.push_back({"Pro w2", 7168, 3072, {140, 0, 33, 257, 0, 2}});
  }
  Scratch fused, converted;
  uint32_t seed = 3000;
  for (const Shape& shape : shapes) {
    const int count = static_cast<int>(shape.per_expert.size());
    const Experts experts(WeightFormat::kFP4, count, shape.out, shape.in, seed);
    const Routing routing(shape.per_expert, 400, seed + 1);
    const DeviceBuffer<float> dx = to_device(simulated_activations(routing.tokens, shape.in, seed + 2));
    seed += 10;
    const size_t fused_bytes = cuda::grouped_linear_tc_scratch_bytes(experts.view, count, routing.slots(), kInGemm);
    const size_t converted_bytes = cuda::grouped_linear_tc_scratch_bytes(experts.view, count, routing.slots(), kPass);
    // The in-GEMM conversion needs the activations' scratch only; kAuto picks it here (few rows
    // per group).
    EXPECT_EQ(cuda::grouped_linear_tc_scratch_bytes(experts.view, count, routing.slots()), fused_bytes);
    EXPECT_EQ(converted_bytes - fused_bytes,
              static_cast<size_t>(std::min(count, 8)) *
                  (cuda::grouped_linear_tc_scratch_bytes(experts.view, 1, routing.slots(), kPass) - fused_bytes));
    for (const bool busy_list : {false, true}) {
      const std::vector<float> a = run_tc(experts, routing, dx, fused.view(1, fused_bytes), busy_list, false);
      const std::vector<float> b = run_tc(experts, routing, dx, converted.view(1, converted_bytes), busy_list, true);
      std::printf("grouped tc fp4 %s [%lld x %lld], %lld slots%s: in-GEMM conversion %s the conversion pass\n",
                  shape.name, static_cast<long long>(shape.out), static_cast<long long>(shape.in),
                  static_cast<long long>(routing.slots()), busy_list ? ", busy list" : "",
                  same_bits(a, b) ? "bitwise equal to" : "DIFFERS from");
      EXPECT_EQ(count_nan(a), 0u) << shape.name << ": unwritten outputs";
      EXPECT_TRUE(same_bits(a, b)) << shape.name << (busy_list ? ", busy list" : "");
    }
  }
}

TEST(CudaGroupedTc, Fp4ScaleSpreadBeyondExactRangeMatchesConversionPassBitwise) {
  // Per output row, 32-block 1 of every 128-block is up to 40 binades above the other three:
  // past 14 binades the small blocks round to nearest e4m3 (to zero from about 21 on; shifts
  // are clamped from 26 on). One row gets a NaN scale byte (0xff) and a row a zero byte (2^-127).
  Scratch fused, converted;
  const int64_t out = 256, in = 1024;
  Experts experts(WeightFormat::kFP4, 3, out, in, 91);
  for (int64_t o = 0; o < out; ++o) experts.spread_scales(o, static_cast<int>(o % 41), 100 + static_cast<int>(o % 40));
  const int64_t nan_row = 37;
  for (HostLinear& h : experts.hosts) {
    h.scale[static_cast<size_t>(nan_row * (in / 32) + 6)] = 0xff;
    h.scale[static_cast<size_t>(90 * (in / 32) + 9)] = 0;
  }
  experts.upload_scales();
  const Routing routing({150, 0, 70}, 120, 92);
  const DeviceBuffer<float> dx = to_device(simulated_activations(routing.tokens, in, 93));
  const size_t fused_bytes = cuda::grouped_linear_tc_scratch_bytes(experts.view, 3, routing.slots(), kInGemm);
  const size_t converted_bytes = cuda::grouped_linear_tc_scratch_bytes(experts.view, 3, routing.slots(), kPass);
  const std::vector<float> a = run_tc(experts, routing, dx, fused.view(1, fused_bytes), true, false);
  const std::vector<float> b = run_tc(experts, routing, dx, converted.view(1, converted_bytes), true, true);
  EXPECT_TRUE(same_bits(a, b));
  // Only the NaN row is NaN (its e8m0 NaN scale), in every slot.
  EXPECT_EQ(count_nan(a), static_cast<size_t>(routing.slots()));
  for (int64_t s = 0; s < routing.slots(); ++s) EXPECT_TRUE(std::isnan(a[static_cast<size_t>(s * out + nan_row)]));
}

TEST(CudaGroupedTc, DispatchThresholdAndFallbacks) {
  Scratch scratch;
  const Experts experts(WeightFormat::kFP4, 5, 256, 512, 500);
  const Routing routing({30, 0, 77, 12, 90}, 100, 501);
  const std::vector<float> x = simulated_activations(routing.tokens, 512, 502);
  const DeviceBuffer<float> dx = to_device(x);
  const size_t bytes = cuda::grouped_linear_tc_scratch_bytes(experts.view, 5, routing.slots());
  // tensor_core_min_rows == 0: the fp32 kernels' bits, with or without scratch.
  const std::vector<float> old_path = run(experts, routing, dx, scratch.view(0, 0), true);
  EXPECT_TRUE(same_bits(run(experts, routing, dx, scratch.view(0, bytes), true), old_path));
  EXPECT_LE(relative_error(old_path, reference(experts, routing, x)), 1e-5);
  // Below the threshold: the fp32 kernels; at it: the tensor cores.
  const int slots = static_cast<int>(routing.slots());
  EXPECT_TRUE(same_bits(run(experts, routing, dx, scratch.view(slots + 1, bytes), true), old_path));
  const std::vector<float> at = run(experts, routing, dx, scratch.view(slots, bytes), true);
  EXPECT_FALSE(same_bits(at, old_path));
  EXPECT_LE(relative_error(at, old_path), kTolerance);
  // Too little scratch: the fp32 kernels.
  EXPECT_TRUE(same_bits(run(experts, routing, dx, scratch.view(1, bytes / 4), true), old_path));
  // Many rows per group (1000 here): kAuto sizes scratch for the conversion pass and takes it;
  // with only the activations' scratch it converts inside the GEMM. The same bits either way.
  {
    const Experts deep(WeightFormat::kFP4, 2, 256, 256, 504);
    const Routing many({1000, 1000}, 1500, 505);
    const DeviceBuffer<float> dxm = to_device(simulated_activations(many.tokens, 256, 506));
    const size_t auto_bytes = cuda::grouped_linear_tc_scratch_bytes(deep.view, 2, many.slots());
    const size_t in_gemm_bytes = cuda::grouped_linear_tc_scratch_bytes(deep.view, 2, many.slots(), kInGemm);
    EXPECT_EQ(auto_bytes, cuda::grouped_linear_tc_scratch_bytes(deep.view, 2, many.slots(), kPass));
    EXPECT_GT(auto_bytes, in_gemm_bytes);
    const std::vector<float> with_pass = run(deep, many, dxm, scratch.view(1, auto_bytes), true);
    const std::vector<float> without = run(deep, many, dxm, scratch.view(1, in_gemm_bytes), true);
    EXPECT_TRUE(same_bits(with_pass, without));
    EXPECT_TRUE(same_bits(with_pass, run_tc(deep, many, dxm, scratch.view(1, in_gemm_bytes), true, false)));
    EXPECT_FALSE(same_bits(with_pass, run(deep, many, dxm, scratch.view(0, 0), true))) << "the tensor cores ran";
  }
  // bf16 experts have no tensor-core path here: the fp32 kernels.
  const Experts bf16(WeightFormat::kBF16, 5, 256, 512, 503);
  EXPECT_TRUE(same_bits(run(bf16, routing, dx, scratch.view(1, bytes), true),
                        run(bf16, routing, dx, scratch.view(0, 0), true)));
}

}  // namespace
}  // namespace longctx

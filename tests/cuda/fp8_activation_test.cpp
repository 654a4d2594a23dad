// Activations quantized once for the fp8 tensor-core GEMM (Fp8Activations, kernels.h): the
// producers (fp8_quantize_activations, rms_norm_quantize_rows, swiglu_quantize) against the
// path they replace (fp32 op, fp8_simulate_rows, then the GEMM's own quantization), and
// linear_fp8 against linear() on the simulated copy. Everything here is bitwise: the codes and
// scales must be exactly those of quantize(fp8_simulate(x)), the tail rows exactly the
// simulation, and y exactly today's bits, for row counts that are not multiples of 4.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/block_quant.h"
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
using cuda_test::poisoned;
using cuda_test::random_floats;
using cuda_test::random_linear;
using cuda_test::same_bits;

// The view's contents on the host.
struct HostView {
  std::vector<uint8_t> codes;   // [tc_rows, width]
  std::vector<float> scales;    // block-major [width / 128, tc_rows]
  std::vector<float> tail;      // [rows - tc_rows, width]
};

HostView fetch(const cuda::Fp8Activations& a) {
  LONGCTX_CUDA_CHECK(cudaDeviceSynchronize());
  HostView h;
  h.codes.resize(static_cast<size_t>(a.tc_rows * a.width));
  h.scales.resize(static_cast<size_t>(a.tc_rows * (a.width / 128)));
  h.tail.resize(static_cast<size_t>((a.rows - a.tc_rows) * a.width));
  if (!h.codes.empty()) {
    LONGCTX_CUDA_CHECK(cudaMemcpy(h.codes.data(), a.codes, h.codes.size(), cudaMemcpyDeviceToHost));
    LONGCTX_CUDA_CHECK(cudaMemcpy(h.scales.data(), a.scales, h.scales.size() * sizeof(float), cudaMemcpyDeviceToHost));
  }
  for (int64_t r = 0; r < a.rows - a.tc_rows; ++r) {
    LONGCTX_CUDA_CHECK(cudaMemcpy(h.tail.data() + r * a.width, a.tail + r * a.tail_stride,
                                  static_cast<size_t>(a.width) * sizeof(float), cudaMemcpyDeviceToHost));
  }
  return h;
}

bool same_view(const HostView& a, const HostView& b) {
  return a.codes == b.codes && same_bits(a.scales, b.scales) && same_bits(a.tail, b.tail);
}

// The view of host rows x [rows, width] as the path it replaces makes it: fp8-simulated in
// blocks of 128 (the tail), then quantized with the simulation's own scales (the codes).
HostView reference_view(const std::vector<float>& x, int64_t rows, int64_t width) {
  const int64_t tc_rows = rows / 4 * 4, blocks = width / 128;
  std::vector<float> simulated = x;
  for (int64_t r = 0; r < rows; ++r) fp8_simulate_blocks(simulated.data() + r * width, static_cast<size_t>(width), 128);
  HostView h;
  h.codes.resize(static_cast<size_t>(tc_rows * width));
  h.scales.resize(static_cast<size_t>(tc_rows * blocks));
  std::vector<uint8_t> scale_bytes(static_cast<size_t>(blocks));
  for (int64_t r = 0; r < tc_rows; ++r) {
    fp8_quantize_blocks(simulated.data() + r * width, static_cast<size_t>(width), 128, h.codes.data() + r * width,
                        scale_bytes.data());
    for (int64_t b = 0; b < blocks; ++b) {
      h.scales[static_cast<size_t>(b * tc_rows + r)] = std::ldexp(1.0f, static_cast<int>(scale_bytes[b]) - 127);
    }
  }
  h.tail.assign(simulated.begin() + tc_rows * width, simulated.end());
  return h;
}

// Random N(0, 1) rows with a few crafted blocks: amax / scale at 225 and 232 (where quantizing x
// directly gives other codes than quantizing its simulation), all zeros, and under the 1e-4 floor.
std::vector<float> activation_rows(int64_t rows, int64_t width, uint32_t seed) {
  std::vector<float> x = random_floats(static_cast<size_t>(rows * width), 1.0f, seed);
  const int64_t blocks = rows * (width / 128);
  for (int64_t k = 0; k < blocks; k += 7) {
    float* block = x.data() + k * 128;
    for (int i = 0; i < 128; ++i) block[i] *= 0.5f;  // under 3.5 = 224 x 2^-6 but by chance
    switch ((k / 7) % 4) {
      case 0: block[k % 128] = 225.0f * 0x1p-6f; break;  // others N(0, 1) < 3.5 = 224 x 2^-6
      case 1: block[(k * 5) % 128] = -232.0f * 0x1p-6f; break;
      case 2: std::memset(block, 0, 128 * sizeof(float)); break;
      default:
        for (int i = 0; i < 128; ++i) block[i] *= 1e-6f;
    }
  }
  return x;
}

LinearWorkspaces make_workspaces(int64_t rows, int64_t width) {
  return LinearWorkspaces({.fp8 = cuda::fp8_tc_scratch_bytes(rows, width)});
}

struct Fp8Weight : RandomDeviceLinear {
  Fp8Weight(int64_t out, int64_t in, uint32_t seed) : RandomDeviceLinear(WeightFormat::kFP8, out, in, seed, true) {}
};

TEST(Fp8Activations, CodesAreThoseOfTheSimulatedRows) {
  // The crafted blocks really are the case where quantizing x itself differs.
  {
    std::vector<float> block(128, 0.5f);
    block[3] = 225.0f;
    std::vector<float> simulated = block;
    fp8_simulate_blocks(simulated.data(), 128, 128);
    uint8_t direct[128], of_simulated[128], direct_scale = 0, simulated_scale = 0;
    fp8_quantize_blocks(block.data(), 128, 128, direct, &direct_scale);
    fp8_quantize_blocks(simulated.data(), 128, 128, of_simulated, &simulated_scale);
    EXPECT_EQ(simulated_scale + 1, direct_scale) << "the simulation's amax 224 halves the scale";
    EXPECT_NE(0, std::memcmp(direct, of_simulated, 128));
  }
  for (const int64_t width : {int64_t{1024}, int64_t{2048}, int64_t{4096}}) {
    for (const int64_t rows : {int64_t{1}, int64_t{66}, int64_t{203}, int64_t{256}}) {
      const std::vector<float> x = activation_rows(rows, width, static_cast<uint32_t>(rows + width));
      const DeviceBuffer<float> dx = to_device(x);
      DeviceBuffer<uint8_t> buffer(cuda::fp8_activation_bytes(rows, width));
      LONGCTX_CUDA_CHECK(cudaMemset(buffer.data(), 0xff, buffer.size()));
      const HostView got = fetch(cuda::fp8_quantize_activations(dx.data(), width, rows, width, buffer.data(), nullptr));
      EXPECT_TRUE(same_view(got, reference_view(x, rows, width))) << rows << " x " << width;
      // With the simulated copy: bitwise fp8_simulate_rows, and it holds the tail.
      DeviceBuffer<float> simulated = poisoned(static_cast<size_t>(rows * width)), expected = poisoned(simulated.size());
      cuda::fp8_simulate_rows(dx.data(), rows, width, width, expected.data(), width, nullptr);
      const cuda::Fp8Activations with_copy =
          cuda::fp8_quantize_activations(dx.data(), width, rows, width, buffer.data(), nullptr, simulated.data(), width);
      EXPECT_EQ(with_copy.tail, simulated.data() + (rows / 4 * 4) * width);
      EXPECT_TRUE(same_view(fetch(with_copy), got)) << rows << " x " << width;
      EXPECT_TRUE(same_bits(download(simulated, simulated.size()), download(expected, expected.size())));
    }
  }
}

// y of linear_fp8 on one quantization against linear() on fp8_simulate_rows (today's path), for
// two weights reading the same input as in the forward (wq_a + wkv, shared w1 + w3, wq_b +
// indexer wq_b, alone: shared w2, wo_b).
TEST(Fp8Activations, LinearMatchesSimulatedPath) {
  struct Case {
    const char* what;
    int64_t in, out_a, out_b;  // out_b 0: one weight
  };
  const Case cases[] = {{"wq_a + wkv", 4096, 1024, 512},
                        {"shared w1 + w3", 4096, 2048, 2048},
                        {"wq_b + indexer wq_b", 1024, 8192, 4096},
                        {"shared w2", 2048, 4096, 0},
                        {"wo_b", 8192, 1024, 0}};
  const int64_t max_rows = 203;
  LinearWorkspaces workspaces = make_workspaces(max_rows, 8192);
  const cuda::LinearWorkspace tc = workspaces.tensor_cores(64);
  uint32_t seed = 500;
  for (const Case& c : cases) {
    std::vector<Fp8Weight> weights;
    weights.reserve(2);
    weights.emplace_back(c.out_a, c.in, seed++);
    if (c.out_b > 0) weights.emplace_back(c.out_b, c.in, seed++);
    for (const int64_t rows : {int64_t{64}, int64_t{66}, int64_t{203}}) {
      const DeviceBuffer<float> dx = to_device(activation_rows(rows, c.in, seed++));
      DeviceBuffer<float> simulated(static_cast<size_t>(rows * c.in));
      cuda::fp8_simulate_rows(dx.data(), rows, c.in, c.in, simulated.data(), c.in, nullptr);
      DeviceBuffer<uint8_t> buffer(cuda::fp8_activation_bytes(rows, c.in));
      const cuda::Fp8Activations a = cuda::fp8_quantize_activations(dx.data(), c.in, rows, c.in, buffer.data(), nullptr);
      for (const Fp8Weight& w : weights) {
        ASSERT_TRUE(cuda::fp8_tc_supported(w.view, rows, tc)) << c.what;
        const size_t n = static_cast<size_t>(rows * w.view.out);
        DeviceBuffer<float> today = poisoned(n), fused = poisoned(n);
        cuda::linear(w.view, simulated.data(), c.in, rows, today.data(), w.view.out, 0, tc, nullptr);
        cuda::linear_fp8(w.view, a, fused.data(), w.view.out, tc, nullptr);
        const std::vector<float> expected = download(today, n), got = download(fused, n);
        EXPECT_TRUE(same_bits(got, expected)) << c.what << " [" << w.view.out << " x " << c.in << "] rows " << rows;
        EXPECT_FALSE(std::isnan(got.back())) << "every row written";
      }
    }
  }
}

TEST(Fp8Activations, RmsNormQuantizeMatchesRmsNormThenQuantize) {
  for (const int64_t n : {int64_t{1024}, int64_t{4096}}) {
    for (const int64_t rows : {int64_t{3}, int64_t{203}}) {
      const std::vector<float> x = random_floats(static_cast<size_t>(rows * n), 2.0f, static_cast<uint32_t>(n + rows));
      const DeviceBuffer<float> dx = to_device(x);
      const DeviceBuffer<float> weight = to_device(random_floats(static_cast<size_t>(n), 1.0f, 7));
      for (const bool with_weight : {true, false}) {
        const float* w = with_weight ? weight.data() : nullptr;
        DeviceBuffer<float> normed = poisoned(x.size());
        cuda::rms_norm_rows(dx.data(), rows, n, n, w, 1e-6f, normed.data(), nullptr);
        DeviceBuffer<uint8_t> expected_buffer(cuda::fp8_activation_bytes(rows, n)), buffer(expected_buffer.size());
        const HostView expected =
            fetch(cuda::fp8_quantize_activations(normed.data(), n, rows, n, expected_buffer.data(), nullptr));
        // Without and with the fp32 rows, in place (out aliases x).
        EXPECT_TRUE(same_view(
            fetch(cuda::rms_norm_quantize_rows(dx.data(), rows, n, n, w, 1e-6f, buffer.data(), nullptr, nullptr)),
            expected))
            << rows << " x " << n;
        DeviceBuffer<float> in_place = to_device(x);
        EXPECT_TRUE(same_view(
            fetch(cuda::rms_norm_quantize_rows(in_place.data(), rows, n, n, w, 1e-6f, buffer.data(), in_place.data(),
                                               nullptr)),
            expected));
        EXPECT_TRUE(same_bits(download(in_place, x.size()), download(normed, x.size())));
      }
    }
  }
}

TEST(Fp8Activations, SwigluQuantizeMatchesSwigluThenQuantize) {
  const int64_t inter = 2048;
  for (const int64_t rows : {int64_t{2}, int64_t{203}}) {
    const size_t n = static_cast<size_t>(rows * inter);
    const DeviceBuffer<float> gate = to_device(random_floats(n, 4.0f, 11)), up = to_device(random_floats(n, 4.0f, 12));
    const DeviceBuffer<float> row_weights = to_device(random_floats(static_cast<size_t>(rows), 1.0f, 13));
    for (const float limit : {0.0f, 7.0f}) {
      for (const bool weighted : {false, true}) {
        const float* rw = weighted ? row_weights.data() : nullptr;
        DeviceBuffer<float> hidden = poisoned(n);
        cuda::swiglu(gate.data(), up.data(), rows, inter, rw, limit, hidden.data(), nullptr);
        DeviceBuffer<uint8_t> expected_buffer(cuda::fp8_activation_bytes(rows, inter)), buffer(expected_buffer.size());
        const HostView expected =
            fetch(cuda::fp8_quantize_activations(hidden.data(), inter, rows, inter, expected_buffer.data(), nullptr));
        EXPECT_TRUE(same_view(
            fetch(cuda::swiglu_quantize(gate.data(), up.data(), rows, inter, rw, limit, buffer.data(), nullptr)),
            expected))
            << "rows " << rows << " limit " << limit << (weighted ? " weighted" : "");
      }
    }
  }
}

TEST(Fp8Activations, SupportedOnlyWhereTheGemmRuns) {
  LinearWorkspaces workspaces = make_workspaces(96, 1024);
  const cuda::LinearWorkspace tc = workspaces.tensor_cores(64);
  const Fp8Weight good(256, 512, 90), odd_in(256, 640, 91), odd_out(200, 512, 92);
  EXPECT_TRUE(cuda::fp8_tc_supported(good.view, 96, tc));
  EXPECT_TRUE(cuda::fp8_tc_supported(good.view, 97, tc)) << "rows % 4 go to the fp32 kernels";
  EXPECT_FALSE(cuda::fp8_tc_supported(good.view, 3, tc)) << "no multiple of 4 rows";
  EXPECT_FALSE(cuda::fp8_tc_supported(odd_in.view, 96, tc));
  EXPECT_FALSE(cuda::fp8_tc_supported(odd_out.view, 96, tc));
  cuda::LinearWorkspace no_handle = tc;
  no_handle.blas_handle = nullptr;
  EXPECT_FALSE(cuda::fp8_tc_supported(good.view, 96, no_handle));
  // Rows under 4: all on the fp32 kernels from the tail, the bits of linear() on the copy.
  const int64_t rows = 3;
  const DeviceBuffer<float> dx = to_device(activation_rows(rows, 512, 93));
  DeviceBuffer<float> simulated(static_cast<size_t>(rows * 512));
  cuda::fp8_simulate_rows(dx.data(), rows, 512, 512, simulated.data(), 512, nullptr);
  DeviceBuffer<uint8_t> buffer(cuda::fp8_activation_bytes(rows, 512));
  DeviceBuffer<float> today = poisoned(static_cast<size_t>(rows * 256)), fused = poisoned(today.size());
  cuda::linear(good.view, simulated.data(), 512, rows, today.data(), 256, 0, tc, nullptr);
  cuda::linear_fp8(good.view, cuda::fp8_quantize_activations(dx.data(), 512, rows, 512, buffer.data(), nullptr),
                   fused.data(), 256, tc, nullptr);
  EXPECT_TRUE(same_bits(download(fused, fused.size()), download(today, today.size())));
}

}  // namespace
}  // namespace longctx

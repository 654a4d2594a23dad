#include "common/block_quant.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/float_formats.h"
#include "longctx/error.h"

namespace longctx {
namespace {

TEST(BlockQuant, Fp8ScaleIsThePowerOfTwoAboveAmaxOver448) {
  std::vector<float> x(64, 0.0f);
  x[3] = 448.0f;  // amax / 448 = 1 exactly
  EXPECT_EQ(fp8_block_scale(x.data(), x.size()), 1.0f);
  x[3] = 449.0f;
  EXPECT_EQ(fp8_block_scale(x.data(), x.size()), 2.0f);
  x[3] = -3.5f;  // 3.5 / 448 = 2^-7
  EXPECT_EQ(fp8_block_scale(x.data(), x.size()), 0x1p-7f);
  std::vector<float> zeros(64, 0.0f);  // amax floors at 1e-4
  EXPECT_EQ(fp8_block_scale(zeros.data(), zeros.size()), pow2_ceil(1e-4f * static_cast<float>(1.0 / 448.0)));
}

TEST(BlockQuant, Fp8SimulationKeepsAmaxAndRoundsOthers) {
  std::vector<float> x(128);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.01f * static_cast<float>(i) - 0.5f;
  x[7] = 3.5f;  // scale 2^-7 in the first block of 64
  std::vector<float> simulated = x;
  fp8_simulate_blocks(simulated.data(), simulated.size(), 64);
  EXPECT_EQ(simulated[7], 3.5f);
  for (size_t i = 0; i < 64; ++i) {
    const float q = x[i] / 0x1p-7f;
    EXPECT_EQ(simulated[i], round_to_fp8_e4m3(q) * 0x1p-7f) << i;
  }
  // Each block has its own scale: the second block's amax is |0.01*127 - 0.5| = 0.77.
  const float scale = fp8_block_scale(x.data() + 64, 64);
  EXPECT_EQ(scale, pow2_ceil(0.77f * static_cast<float>(1.0 / 448.0)));
  EXPECT_EQ(simulated[100], round_to_fp8_e4m3(x[100] / scale) * scale);
}

TEST(BlockQuant, Fp4SimulationUsesSixAsMax) {
  std::vector<float> x(32, 0.0f);
  x[0] = 6.0f;  // scale 1
  x[1] = 0.75f;  // ties to 1
  x[2] = -5.0f;  // ties to -4
  fp4_simulate_blocks(x.data(), x.size(), 32);
  EXPECT_EQ(x[0], 6.0f);
  EXPECT_EQ(x[1], 1.0f);
  EXPECT_EQ(x[2], -4.0f);
  std::vector<float> y(32, 0.0f);
  y[0] = 12.0f;  // amax 12: scale 2
  y[1] = 1.5f;
  fp4_simulate_blocks(y.data(), y.size(), 32);
  EXPECT_EQ(y[0], 12.0f);
  EXPECT_EQ(y[1], 2.0f);  // 1.5 / 2 = 0.75 ties to 1 -> 2
}

TEST(BlockQuant, QuantizedCodesDecodeToTheSimulatedValues) {
  std::vector<float> x(256);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 5.0f;
  std::vector<uint8_t> codes(256), scales(2);
  fp8_quantize_blocks(x.data(), 256, 128, codes.data(), scales.data());
  std::vector<float> simulated = x;
  fp8_simulate_blocks(simulated.data(), 256, 128);
  for (size_t i = 0; i < 256; ++i) {
    EXPECT_EQ(fp8_e4m3_to_float(codes[i]) * e8m0_to_float(scales[i / 128]), simulated[i]);
  }
  std::vector<uint8_t> packed(128), fp4_scales(8);
  fp4_quantize_blocks(x.data(), 256, 32, packed.data(), fp4_scales.data());
  std::vector<float> fp4_simulated = x;
  fp4_simulate_blocks(fp4_simulated.data(), 256, 32);
  for (size_t i = 0; i < 256; ++i) {
    const uint8_t code = (i % 2 == 0) ? packed[i / 2] & 0xf : packed[i / 2] >> 4;
    EXPECT_EQ(fp4_e2m1_to_float(code) * e8m0_to_float(fp4_scales[i / 32]), fp4_simulated[i]);
  }
}

TEST(BlockQuant, RejectsLengthsThatAreNotWholeBlocks) {
  std::vector<float> x(100);
  EXPECT_THROW(fp8_simulate_blocks(x.data(), x.size(), 64), Error);
}

}  // namespace
}  // namespace longctx

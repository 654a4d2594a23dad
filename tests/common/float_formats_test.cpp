#include "common/float_formats.h"

#include <gtest/gtest.h>

#include <cmath>

namespace longctx {
namespace {

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(round_to_bf16(1.0f), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(round_to_bf16(1.0f + 0x1p-8f), 1.0f);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
  EXPECT_EQ(round_to_bf16(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);
  EXPECT_EQ(round_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 1.0f + 0x1p-7f);
  EXPECT_TRUE(std::isnan(round_to_bf16(std::nanf(""))));
}

TEST(Fp8E4m3, DecodesEveryCodeAndRoundTrips) {
  EXPECT_EQ(fp8_e4m3_to_float(0x00), 0.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x38), 1.0f);   // exponent 7 = bias
  EXPECT_EQ(fp8_e4m3_to_float(0x7e), 448.0f);  // largest finite
  EXPECT_EQ(fp8_e4m3_to_float(0x01), 0x1p-9f);  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_float(0x08), 0x1p-6f);  // smallest normal
  EXPECT_EQ(fp8_e4m3_to_float(0xb8), -1.0f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0x7f)));
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;
    const float value = fp8_e4m3_to_float(static_cast<uint8_t>(code));
    EXPECT_EQ(round_to_fp8_e4m3(value), value) << code;
    if (value != 0.0f) {
      EXPECT_EQ(float_to_fp8_e4m3(value), code) << code;
    }
  }
}

TEST(Fp8E4m3, TiesGoToEvenAndLargeValuesSaturate) {
  // Between 1 (mantissa 0) and 1.125 (mantissa 1): the tie 1.0625 goes to 1.
  EXPECT_EQ(round_to_fp8_e4m3(1.0625f), 1.0f);
  // Between 1.125 and 1.25: the tie 1.1875 goes to 1.25 (mantissa 2).
  EXPECT_EQ(round_to_fp8_e4m3(1.1875f), 1.25f);
  EXPECT_EQ(round_to_fp8_e4m3(1.07f), 1.125f);
  // Subnormal grid step 2^-9: 1.5 * 2^-9 ties to 2 * 2^-9.
  EXPECT_EQ(round_to_fp8_e4m3(1.5f * 0x1p-9f), 2 * 0x1p-9f);
  EXPECT_EQ(round_to_fp8_e4m3(0.5f * 0x1p-9f), 0.0f);
  EXPECT_EQ(round_to_fp8_e4m3(1000.0f), 448.0f);
  EXPECT_EQ(round_to_fp8_e4m3(-1e30f), -448.0f);
  EXPECT_EQ(round_to_fp8_e4m3(460.0f), 448.0f);  // would round to 480, which does not exist
  EXPECT_EQ(float_to_fp8_e4m3(1e9f), 0x7e);
  EXPECT_EQ(float_to_fp8_e4m3(-1e9f), 0xfe);
}

TEST(Fp4E2m1, RoundsToTheSixteenValuesWithTiesToEven) {
  EXPECT_EQ(round_to_fp4_e2m1(0.25f), 0.0f);   // tie between 0 and 0.5 -> 0
  EXPECT_EQ(round_to_fp4_e2m1(0.75f), 1.0f);   // tie between 0.5 and 1 -> 1
  EXPECT_EQ(round_to_fp4_e2m1(1.25f), 1.0f);   // tie between 1 and 1.5 -> 1
  EXPECT_EQ(round_to_fp4_e2m1(1.75f), 2.0f);   // tie between 1.5 and 2 -> 2
  EXPECT_EQ(round_to_fp4_e2m1(2.5f), 2.0f);    // tie between 2 and 3 -> 2
  EXPECT_EQ(round_to_fp4_e2m1(3.5f), 4.0f);    // tie between 3 and 4 -> 4
  EXPECT_EQ(round_to_fp4_e2m1(5.0f), 4.0f);    // tie between 4 and 6 -> 4
  EXPECT_EQ(round_to_fp4_e2m1(5.1f), 6.0f);
  EXPECT_EQ(round_to_fp4_e2m1(100.0f), 6.0f);  // saturates
  EXPECT_EQ(round_to_fp4_e2m1(-2.6f), -3.0f);
  for (uint8_t code = 0; code < 16; ++code) {
    const float value = fp4_e2m1_to_float(code);
    if (code == 8) continue;  // -0 encodes as 8 but decodes equal to 0
    EXPECT_EQ(float_to_fp4_e2m1(value), code);
  }
}

TEST(E8m0, PowersOfTwo) {
  EXPECT_EQ(e8m0_to_float(127), 1.0f);
  EXPECT_EQ(e8m0_to_float(128), 2.0f);
  EXPECT_EQ(e8m0_to_float(120), 0x1p-7f);
  EXPECT_EQ(float_to_e8m0(0x1p-7f), 120);
  EXPECT_EQ(float_to_e8m0(1024.0f), 137);
  EXPECT_TRUE(std::isnan(e8m0_to_float(255)));
}

TEST(Pow2Ceil, MatchesTheBitTrickOfTheReference) {
  EXPECT_EQ(pow2_ceil(1.0f), 1.0f);
  EXPECT_EQ(pow2_ceil(1.0001f), 2.0f);
  EXPECT_EQ(pow2_ceil(0.3f), 0.5f);
  EXPECT_EQ(pow2_ceil(0x1p-20f), 0x1p-20f);
  EXPECT_EQ(pow2_ceil(3.0f), 4.0f);
}

}  // namespace
}  // namespace longctx

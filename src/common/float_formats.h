// Scalar number formats of the released checkpoints and of the model's quantization
// simulation: bf16, fp8 e4m3 (the "fn" variant: no infinities, max 448), fp4 e2m1 (max 6) and
// the exponent-only e8m0 scale byte. Every rounding is round-to-nearest-even, as the GPU's
// conversion instructions do.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace longctx {

inline constexpr float kFp8E4m3Max = 448.0f;
inline constexpr float kFp4E2m1Max = 6.0f;

// ---- bf16 ----
inline float bf16_to_float(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}
inline uint16_t float_to_bf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
inline float round_to_bf16(float value) { return bf16_to_float(float_to_bf16(value)); }

// ---- e8m0: a byte e means 2^(e-127); 0xff is NaN ----
inline float e8m0_to_float(uint8_t byte) {
  if (byte == 0xff) return std::nanf("");
  if (byte == 0) return std::ldexp(1.0f, -127);
  return std::bit_cast<float>(static_cast<uint32_t>(byte) << 23);
}
// The byte of a power of two 2^k, k in [-127, 127].
uint8_t float_to_e8m0(float power_of_two);

// ---- fp8 e4m3fn ----
float fp8_e4m3_to_float(uint8_t byte);
// Rounds to nearest even, saturating at +-448 (the "satfinite" conversion).
uint8_t float_to_fp8_e4m3(float value);
// The float nearest to value on the e4m3 grid (saturating): decode(encode(value)).
float round_to_fp8_e4m3(float value);

// ---- fp4 e2m1: codes 0..7 are 0, .5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign ----
float fp4_e2m1_to_float(uint8_t code);
uint8_t float_to_fp4_e2m1(float value);
float round_to_fp4_e2m1(float value);

// Smallest power of two >= x, computed as the reference kernels do: from the bits of x
// (exponent, plus one if any mantissa bit is set). x must be positive and finite.
inline float pow2_ceil(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + ((bits & 0x7fffffu) != 0);
  return std::ldexp(1.0f, exponent);
}

// 256-entry decode tables, for inner loops.
const float* fp8_e4m3_table();
const float* e8m0_table();
// 16 entries, indexed by the 4-bit code.
const float* fp4_e2m1_table();

}  // namespace longctx

#include "common/float_formats.h"

#include <algorithm>
#include <array>

namespace longctx {
namespace {

// Rounds |value| to the grid of a float format with `mantissa_bits` explicit mantissa bits
// and smallest normal exponent `min_exponent`: within one binade the grid step is constant,
// so dividing by the step, rounding to the nearest even integer and multiplying back is exact.
float round_magnitude(float magnitude, int mantissa_bits, int min_exponent) {
  if (magnitude == 0.0f) return 0.0f;
  int exponent = 0;
  std::frexp(magnitude, &exponent);  // magnitude = f * 2^exponent, f in [0.5, 1)
  const int binade = std::max(exponent - 1, min_exponent);
  const float step = std::ldexp(1.0f, binade - mantissa_bits);
  return std::nearbyint(magnitude / step) * step;
}

std::array<float, 256> make_fp8_table() {
  std::array<float, 256> table{};
  for (int byte = 0; byte < 256; ++byte) {
    const int sign = byte >> 7;
    const int exponent = (byte >> 3) & 0xf;
    const int mantissa = byte & 0x7;
    float value;
    if (exponent == 0xf && mantissa == 0x7) {
      value = std::nanf("");
    } else if (exponent == 0) {
      value = std::ldexp(static_cast<float>(mantissa), -9);
    } else {
      value = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
    }
    table[static_cast<size_t>(byte)] = sign ? -value : value;
  }
  return table;
}

std::array<float, 256> make_e8m0_table() {
  std::array<float, 256> table{};
  for (int byte = 0; byte < 256; ++byte) table[static_cast<size_t>(byte)] = e8m0_to_float(static_cast<uint8_t>(byte));
  return table;
}

constexpr std::array<float, 16> kFp4Values = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                              -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

}  // namespace

uint8_t float_to_e8m0(float power_of_two) {
  int exponent = 0;
  std::frexp(power_of_two, &exponent);
  const int biased = exponent - 1 + 127;
  return static_cast<uint8_t>(std::clamp(biased, 0, 254));
}

const float* fp8_e4m3_table() {
  static const std::array<float, 256> table = make_fp8_table();
  return table.data();
}
const float* e8m0_table() {
  static const std::array<float, 256> table = make_e8m0_table();
  return table.data();
}
const float* fp4_e2m1_table() { return kFp4Values.data(); }

float fp8_e4m3_to_float(uint8_t byte) { return fp8_e4m3_table()[byte]; }

float round_to_fp8_e4m3(float value) {
  if (std::isnan(value)) return value;
  const float magnitude = std::min(std::fabs(value), kFp8E4m3Max);
  // 3 mantissa bits; normals start at 2^-6, below that the step stays 2^-9.
  const float rounded = std::min(round_magnitude(magnitude, 3, -6), kFp8E4m3Max);
  return std::copysign(rounded, value);
}

uint8_t float_to_fp8_e4m3(float value) {
  if (std::isnan(value)) return 0x7f;
  const float rounded = round_to_fp8_e4m3(value);
  const uint8_t sign = std::signbit(rounded) ? 0x80 : 0x00;
  const float magnitude = std::fabs(rounded);
  if (magnitude == 0.0f) return sign;
  int exponent = 0;
  const float fraction = std::frexp(magnitude, &exponent);  // magnitude = fraction * 2^exponent
  const int biased = exponent - 1 + 7;
  if (biased <= 0) {  // subnormal: magnitude = m * 2^-9
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::ldexp(magnitude, 9)));
  }
  const int mantissa = static_cast<int>((fraction * 2.0f - 1.0f) * 8.0f);
  return static_cast<uint8_t>(sign | (biased << 3) | mantissa);
}

float fp4_e2m1_to_float(uint8_t code) { return kFp4Values[code & 0xf]; }

float round_to_fp4_e2m1(float value) {
  if (std::isnan(value)) return value;
  const float magnitude = std::min(std::fabs(value), kFp4E2m1Max);
  // 1 mantissa bit; normals start at 2^0, below that the step stays 0.5.
  const float rounded = std::min(round_magnitude(magnitude, 1, 0), kFp4E2m1Max);
  return std::copysign(rounded, value);
}

uint8_t float_to_fp4_e2m1(float value) {
  const float rounded = round_to_fp4_e2m1(value);
  const float magnitude = std::fabs(rounded);
  uint8_t code = 0;
  for (uint8_t c = 0; c < 8; ++c) {
    if (kFp4Values[c] == magnitude) code = c;
  }
  return static_cast<uint8_t>((std::signbit(rounded) ? 0x8 : 0x0) | code);
}

}  // namespace longctx

#include "common/block_quant.h"

#include <algorithm>
#include <cmath>

#include "common/float_formats.h"
#include "longctx/error.h"

namespace longctx {
namespace {

// The reference multiplies amax by the reciprocal held in fp32; keep that exact product so
// scales agree bit for bit when amax / max is itself a power of two.
const float kFp8MaxInverse = static_cast<float>(1.0 / 448.0);
const float kFp4MaxInverse = static_cast<float>(1.0 / 6.0);
const float kFp8AmaxFloor = 1e-4f;
const float kFp4AmaxFloor = 6.0f * 0x1p-126f;

float block_amax(const float* x, size_t n) {
  float amax = 0.0f;
  for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  return amax;
}

void check_blocks(size_t n, size_t block) {
  if (block == 0 || n % block != 0) fail("block quantization: length ", n, " is not a multiple of block ", block);
}

}  // namespace

float fp8_block_scale(const float* x, size_t n) {
  return pow2_ceil(std::max(block_amax(x, n), kFp8AmaxFloor) * kFp8MaxInverse);
}

float fp4_block_scale(const float* x, size_t n) {
  return pow2_ceil(std::max(block_amax(x, n), kFp4AmaxFloor) * kFp4MaxInverse);
}

void fp8_simulate_blocks(float* x, size_t n, size_t block) {
  check_blocks(n, block);
  for (size_t start = 0; start < n; start += block) {
    float* values = x + start;
    const float scale = fp8_block_scale(values, block);
    for (size_t i = 0; i < block; ++i) {
      const float q = std::clamp(values[i] / scale, -kFp8E4m3Max, kFp8E4m3Max);
      values[i] = round_to_fp8_e4m3(q) * scale;
    }
  }
}

void fp4_simulate_blocks(float* x, size_t n, size_t block) {
  check_blocks(n, block);
  for (size_t start = 0; start < n; start += block) {
    float* values = x + start;
    const float scale = fp4_block_scale(values, block);
    for (size_t i = 0; i < block; ++i) {
      const float q = std::clamp(values[i] / scale, -kFp4E2m1Max, kFp4E2m1Max);
      values[i] = round_to_fp4_e2m1(q) * scale;
    }
  }
}

void fp8_quantize_blocks(const float* x, size_t n, size_t block, uint8_t* codes,
                         uint8_t* scales) {
  check_blocks(n, block);
  for (size_t start = 0, b = 0; start < n; start += block, ++b) {
    const float scale = fp8_block_scale(x + start, block);
    scales[b] = float_to_e8m0(scale);
    for (size_t i = 0; i < block; ++i) {
      codes[start + i] = float_to_fp8_e4m3(std::clamp(x[start + i] / scale, -kFp8E4m3Max, kFp8E4m3Max));
    }
  }
}

void fp4_quantize_blocks(const float* x, size_t n, size_t block, uint8_t* packed,
                         uint8_t* scales) {
  check_blocks(n, block);
  if (block % 2 != 0) fail("fp4 quantization needs an even block, got ", block);
  for (size_t start = 0, b = 0; start < n; start += block, ++b) {
    const float scale = fp4_block_scale(x + start, block);
    scales[b] = float_to_e8m0(scale);
    for (size_t i = 0; i < block; i += 2) {
      const uint8_t low = float_to_fp4_e2m1(x[start + i] / scale);
      const uint8_t high = float_to_fp4_e2m1(x[start + i + 1] / scale);
      packed[(start + i) / 2] = static_cast<uint8_t>(low | (high << 4));
    }
  }
}

}  // namespace longctx

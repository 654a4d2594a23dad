// Helpers of the CUDA tests: random inputs, error measures, device round trips.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/float_formats.h"
#include "cuda/cuda_check.h"
#include "model/model_weights.h"

namespace longctx::cuda_test {

inline std::vector<float> random_floats(size_t n, float scale, uint32_t seed) {
  std::mt19937 random(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(n);
  for (float& v : values) v = normal(random);
  return values;
}

// max |a - b| / max |b|.
inline double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

// Fraction of elements with |a - b| <= tolerance * max |b|.
inline double fraction_close(const std::vector<float>& a, const std::vector<float>& b, double tolerance) {
  double scale = 0;
  for (const float v : b) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  size_t close = 0;
  for (size_t i = 0; i < b.size(); ++i) close += std::fabs(a[i] - b[i]) <= tolerance * scale;
  return b.empty() ? 1.0 : static_cast<double>(close) / static_cast<double>(b.size());
}

// A random weight in stored format, with its host storage.
struct HostLinear {
  std::vector<uint8_t> weight;
  std::vector<uint8_t> scale;
  LinearWeight w;
};

inline HostLinear random_linear(WeightFormat format, int64_t out, int64_t in, uint32_t seed,
                                bool quantize_activations = false) {
  std::mt19937 random(seed);
  HostLinear h;
  h.w.format = format;
  h.w.out = out;
  h.w.in = in;
  h.w.quantize_activations = quantize_activations;
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> exponent(-3, 1);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const size_t o = static_cast<size_t>(out);
  const size_t i = static_cast<size_t>(in);
  switch (format) {
    case WeightFormat::kBF16:
      h.weight.resize(o * i * 2);
      for (size_t k = 0; k < o * i; ++k) {
        const uint16_t bits = float_to_bf16(normal(random));
        h.weight[2 * k] = static_cast<uint8_t>(bits & 0xff);
        h.weight[2 * k + 1] = static_cast<uint8_t>(bits >> 8);
      }
      break;
    case WeightFormat::kFP8:
      h.weight.resize(o * i);
      for (uint8_t& b : h.weight) {
        do {
          b = static_cast<uint8_t>(byte(random));
        } while ((b & 0x7f) == 0x7f);
      }
      h.scale.resize(((o + 127) / 128) * ((i + 127) / 128));
      for (uint8_t& s : h.scale) s = static_cast<uint8_t>(127 - 9 + exponent(random));
      break;
    case WeightFormat::kFP4:
      h.weight.resize(o * i / 2);
      for (uint8_t& b : h.weight) b = static_cast<uint8_t>(byte(random));
      h.scale.resize(o * (i / 32));
      for (uint8_t& s : h.scale) s = static_cast<uint8_t>(127 - 5 + exponent(random));
      break;
  }
  h.w.weight = h.weight.data();
  h.w.scale = h.scale.empty() ? nullptr : h.scale.data();
  return h;
}

// Bitwise equality of two float vectors.
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Rows [0, rows) of a strided matrix, packed.
inline std::vector<float> packed(const std::vector<float>& m, int64_t rows, int64_t cols, int64_t stride) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) std::memcpy(out.data() + r * cols, m.data() + r * stride, cols * sizeof(float));
  return out;
}

// A device buffer filled with NaN bytes, so that an output a kernel leaves unwritten shows.
inline cuda::DeviceBuffer<float> poisoned(size_t count) {
  cuda::DeviceBuffer<float> y(count);
  LONGCTX_CUDA_CHECK(cudaMemset(y.data(), 0xff, count * sizeof(float)));
  return y;
}

template <typename T>
std::vector<T> download(const cuda::DeviceBuffer<T>& buffer, size_t count) {
  LONGCTX_CUDA_CHECK(cudaDeviceSynchronize());
  return buffer.download(count);
}

}  // namespace longctx::cuda_test

#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace longctx {
namespace {

constexpr double kPi = 3.14159265358979323846;

// The rotary dimension at which a frequency completes `rotations` turns over max_len positions.
double correction_dim(double rotations, int64_t dim, double base, double max_len) {
  return static_cast<double>(dim) * std::log(max_len / (rotations * 2 * kPi)) / (2 * std::log(base));
}

}  // namespace

RopeTable::RopeTable(int64_t rope_dim, double theta, const YarnScaling& yarn) : rope_dim_(rope_dim) {
  const int64_t half = rope_dim / 2;
  inv_freq_.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // fp32 exponent (2i / dim), as the reference builds it from an fp32 arange.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rope_dim);
    inv_freq_[static_cast<size_t>(i)] =
        static_cast<float>(1.0 / std::pow(theta, static_cast<double>(exponent)));
  }
  if (!yarn.enabled || yarn.original_max_position_embeddings <= 0) return;
  // YaRN: interpolate low frequencies by `factor`, keep high ones, ramp linearly between.
  const double max_len = static_cast<double>(yarn.original_max_position_embeddings);
  double low = std::floor(correction_dim(yarn.beta_fast, rope_dim, theta, max_len));
  double high = std::ceil(correction_dim(yarn.beta_slow, rope_dim, theta, max_len));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(rope_dim - 1));
  if (low == high) high += 0.001;
  const float factor = static_cast<float>(yarn.factor);
  for (int64_t i = 0; i < half; ++i) {
    const float ramp = std::clamp(
        (static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f, 1.0f);
    const float smooth = 1.0f - ramp;
    const float freq = inv_freq_[static_cast<size_t>(i)];
    inv_freq_[static_cast<size_t>(i)] = freq / factor * (1.0f - smooth) + freq * smooth;
  }
}

RopeTable RopeTable::for_layer(const ModelConfig& config, int ratio) {
  if (ratio == 0) return RopeTable(config.qk_rope_head_dim, config.rope_theta, YarnScaling{});
  return RopeTable(config.qk_rope_head_dim, config.compress_rope_theta, config.rope_scaling);
}

void RopeTable::angles(int64_t pos, float* cos_out, float* sin_out) const {
  const float position = static_cast<float>(pos);
  for (size_t i = 0; i < inv_freq_.size(); ++i) {
    const float angle = position * inv_freq_[i];
    cos_out[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
    sin_out[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
  }
}

void RopeTable::rotate(float* x, int64_t pos, bool inverse) const {
  const size_t half = inv_freq_.size();
  float cos_values[256];
  float sin_values[256];
  angles(pos, cos_values, sin_values);
  for (size_t i = 0; i < half; ++i) {
    const float c = cos_values[i];
    const float s = inverse ? -sin_values[i] : sin_values[i];
    const float re = x[2 * i];
    const float im = x[2 * i + 1];
    x[2 * i] = re * c - im * s;
    x[2 * i + 1] = re * s + im * c;
  }
}

}  // namespace longctx

#include "cpu/cpu_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cpu/cpu_attention.h"
#include "model/rope.h"

namespace longctx::cpu {
namespace {

TEST(RmsNorm, HandCheckedValues) {
  const float x[2] = {3.0f, 4.0f};  // mean square 12.5
  const float w[2] = {1.0f, 2.0f};
  float out[2];
  rms_norm(x, w, 2, 0.0f, out);
  EXPECT_NEAR(out[0], 3.0f / std::sqrt(12.5f), 1e-6);
  EXPECT_NEAR(out[1], 2.0f * 4.0f / std::sqrt(12.5f), 1e-6);
  rms_norm(x, nullptr, 2, 12.5f, out);  // eps doubles the mean square
  EXPECT_NEAR(out[0], 3.0f / 5.0f, 1e-6);
}

TEST(Rope, RotatesPairsAndInverts) {
  const RopeTable rope(64, 10000.0, YarnScaling{});
  ASSERT_EQ(rope.inverse_frequencies().size(), 32u);
  EXPECT_FLOAT_EQ(rope.inverse_frequencies()[0], 1.0f);
  EXPECT_NEAR(rope.inverse_frequencies()[16], std::pow(10000.0, -0.5), 1e-9);
  std::vector<float> x(64, 0.0f);
  x[0] = 1.0f;  // pair 0 = (1, 0): frequency 1, so position 2 rotates by 2 radians
  x[2] = 0.5f;
  x[3] = -0.25f;
  const std::vector<float> original = x;
  rope.rotate(x.data(), 2, false);
  EXPECT_NEAR(x[0], std::cos(2.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(2.0), 1e-6);
  const double angle = 2.0 * rope.inverse_frequencies()[1];
  EXPECT_NEAR(x[2], 0.5 * std::cos(angle) + 0.25 * std::sin(angle), 1e-6);
  EXPECT_NEAR(x[3], 0.5 * std::sin(angle) - 0.25 * std::cos(angle), 1e-6);
  rope.rotate(x.data(), 2, true);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], original[i], 1e-6) << i;
  // Position 0 is the identity.
  std::vector<float> y = original;
  rope.rotate(y.data(), 0, false);
  EXPECT_EQ(y, original);
}

TEST(Rope, YarnScalesOnlyLowFrequencies) {
  // V4: compress_rope_theta 160000, factor 16, original length 65536, beta 32 / 1. The ramp
  // runs from dim floor(15.45) = 15 to ceil(24.71) = 25.
  const YarnScaling yarn{true, 16.0, 65536, 32.0, 1.0};
  const RopeTable plain(64, 160000.0, YarnScaling{});
  const RopeTable scaled(64, 160000.0, yarn);
  for (size_t i = 0; i <= 15; ++i) EXPECT_EQ(scaled.inverse_frequencies()[i], plain.inverse_frequencies()[i]) << i;
  for (size_t i = 25; i < 32; ++i) {
    EXPECT_FLOAT_EQ(scaled.inverse_frequencies()[i], plain.inverse_frequencies()[i] / 16.0f) << i;
  }
  const float ramp = (20.0f - 15.0f) / 10.0f;
  EXPECT_FLOAT_EQ(scaled.inverse_frequencies()[20],
                  plain.inverse_frequencies()[20] / 16.0f * ramp + plain.inverse_frequencies()[20] * (1 - ramp));
}

TEST(Sinkhorn, CombIsDoublyStochastic) {
  std::mt19937 random(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> mixes(24), base(24);
  for (auto& v : mixes) v = normal(random);
  for (auto& v : base) v = normal(random);
  const float scale[3] = {0.7f, 1.3f, 0.9f};
  float pre[4], post[4], comb[16];
  hc_split_sinkhorn(mixes.data(), scale, base.data(), 4, 20, 1e-6f, pre, post, comb);
  for (int j = 0; j < 4; ++j) {
    float row = 0, column = 0;
    for (int k = 0; k < 4; ++k) {
      row += comb[j * 4 + k];
      column += comb[k * 4 + j];
    }
    EXPECT_NEAR(row, 1.0f, 1e-2);  // 20 iterations leave rows within ~0.2% on such logits
    EXPECT_NEAR(column, 1.0f, 1e-4);  // columns are normalized last
    EXPECT_NEAR(pre[j], 1.0f / (1.0f + std::exp(-(mixes[j] * 0.7f + base[j]))) + 1e-6f, 1e-6);
    EXPECT_NEAR(post[j], 2.0f / (1.0f + std::exp(-(mixes[4 + j] * 1.3f + base[4 + j]))), 1e-6);
    EXPECT_GT(post[j], 0.0f);
    EXPECT_LT(post[j], 2.0f);
  }
  // One iteration: row softmax (+eps) then one column normalization.
  hc_split_sinkhorn(mixes.data(), scale, base.data(), 4, 1, 0.0f, pre, post, comb);
  double softmax[16];
  for (int j = 0; j < 4; ++j) {
    double total = 0;
    for (int k = 0; k < 4; ++k) total += std::exp(mixes[8 + j * 4 + k] * 0.9 + base[8 + j * 4 + k]);
    for (int k = 0; k < 4; ++k) softmax[j * 4 + k] = std::exp(mixes[8 + j * 4 + k] * 0.9 + base[8 + j * 4 + k]) / total;
  }
  for (int k = 0; k < 4; ++k) {
    double column = 0;
    for (int j = 0; j < 4; ++j) column += softmax[j * 4 + k];
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(comb[j * 4 + k], softmax[j * 4 + k] / column, 1e-6);
  }
}

TEST(Hadamard, MatchesTheSylvesterMatrix) {
  float unit[4] = {1, 0, 0, 0};
  hadamard_transform(unit, 4);
  for (float v : unit) EXPECT_FLOAT_EQ(v, 0.5f);
  std::mt19937 random(5);
  std::normal_distribution<float> normal;
  std::vector<float> x(8);
  for (auto& v : x) v = normal(random);
  std::vector<float> y = x;
  hadamard_transform(y.data(), 8);
  for (int i = 0; i < 8; ++i) {
    double expected = 0;
    // Sylvester H[i][j] = (-1)^popcount(i & j).
    for (int j = 0; j < 8; ++j) expected += (__builtin_popcount(i & j) % 2 ? -1.0 : 1.0) * x[j];
    EXPECT_NEAR(y[i], expected / std::sqrt(8.0), 1e-5);
  }
  hadamard_transform(y.data(), 8);  // orthonormal and symmetric: its own inverse
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y[i], x[i], 1e-5);
}

TEST(Attend, SoftmaxWithSinkHasTheSinkOnlyInTheDenominator) {
  // One head of dim 4, two keys: logits q.k / 2.
  const float q[4] = {2, 0, 0, 0};
  const float keys[8] = {1, 0, 0, 0, 0, 1, 0, 0};  // logits 1 and 0
  const float sink[1] = {0.5f};
  float out[4];
  attend(q, keys, 2, sink, 1, 4, out);
  const double e1 = std::exp(1.0), e0 = 1.0, es = std::exp(0.5);
  const double denominator = e1 + e0 + es;
  EXPECT_NEAR(out[0], e1 / denominator, 1e-6);
  EXPECT_NEAR(out[1], e0 / denominator, 1e-6);
  EXPECT_NEAR(out[2], 0.0, 1e-7);
  // A very negative sink leaves the plain softmax.
  const float no_sink[1] = {-1e30f};
  attend(q, keys, 2, no_sink, 1, 4, out);
  EXPECT_NEAR(out[0] + out[1], 1.0, 1e-6);
}

TEST(Dot, IsIndependentOfAlignmentOfTheTail) {
  std::vector<float> a(19), b(19);
  for (int i = 0; i < 19; ++i) {
    a[static_cast<size_t>(i)] = static_cast<float>(i) * 0.5f;
    b[static_cast<size_t>(i)] = 1.0f;
  }
  EXPECT_FLOAT_EQ(dot(a.data(), b.data(), 19), 0.5f * 171.0f);
}

}  // namespace
}  // namespace longctx::cpu

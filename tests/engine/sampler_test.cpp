#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "engine/stop_checker.h"

namespace longctx {
namespace {

SampleResult draw(const std::vector<float>& logits, const SamplingParams& params, int64_t position = 0,
                  uint64_t seed = 1) {
  PenaltyState penalties;
  penalties.init({}, static_cast<int64_t>(logits.size()), params);
  return sample_token(logits, params, penalties, seed, 0, position);
}

TEST(Sampler, GreedyTakesTheHighestAndTheLowestIdOnTies) {
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(draw({0.1f, 2.0f, 2.0f, -1.0f}, p).token, 1);
}

TEST(Sampler, FiltersRestrictTheCandidates) {
  const std::vector<float> logits = {3.0f, 2.9f, 0.0f, -5.0f};
  SamplingParams top_k;
  top_k.top_k = 2;
  SamplingParams top_p;
  top_p.top_p = 0.6;  // token 0 alone has 51%, tokens 0 and 1 together 97%
  SamplingParams min_p;
  min_p.min_p = 0.5;  // tokens with at least half the top probability: 0 and 1
  std::map<int32_t, int> seen_k, seen_p, seen_min;
  for (int64_t i = 0; i < 400; ++i) {
    ++seen_k[draw(logits, top_k, i).token];
    ++seen_p[draw(logits, top_p, i).token];
    ++seen_min[draw(logits, min_p, i).token];
  }
  EXPECT_EQ(seen_k.size(), 2u);
  EXPECT_FALSE(seen_k.count(2));
  EXPECT_EQ(seen_p.size(), 2u);
  EXPECT_EQ(seen_min.size(), 2u);
  EXPECT_GT(seen_k[0], 120);
  EXPECT_GT(seen_k[1], 120);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> logits(50, 0.0f);
  SamplingParams p;
  std::vector<int32_t> a, b, c;
  for (int64_t i = 0; i < 64; ++i) {
    a.push_back(draw(logits, p, i, 42).token);
    b.push_back(draw(logits, p, i, 42).token);
    c.push_back(draw(logits, p, i, 43).token);
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Sampler, PenaltiesLowerSeenTokens) {
  SamplingParams p;
  p.temperature = 0;
  p.presence_penalty = 1.0;
  PenaltyState penalties;
  penalties.init({}, 3, p);
  penalties.add_output(0);
  EXPECT_EQ(sample_token(std::vector<float>{1.5f, 1.0f, 0.0f}, p, penalties, 0, 0, 0).token, 1);
  SamplingParams rep;
  rep.temperature = 0;
  rep.repetition_penalty = 2.0;
  PenaltyState prompt_seen;
  const std::vector<int32_t> prompt = {0};
  prompt_seen.init(prompt, 3, rep);
  EXPECT_EQ(sample_token(std::vector<float>{1.5f, 1.0f, 0.0f}, rep, prompt_seen, 0, 0, 0).token, 1);  // 1.5/2 < 1
}

TEST(Sampler, LogprobsAreThoseOfTheRawDistribution) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 2;
  const SampleResult r = draw({std::log(0.5f), std::log(0.3f), std::log(0.2f)}, p);
  EXPECT_EQ(r.logprob.token, 0);
  EXPECT_NEAR(r.logprob.logprob, std::log(0.5), 1e-5);
  ASSERT_EQ(r.logprob.top.size(), 2u);
  EXPECT_EQ(r.logprob.top[1].first, 1);
  EXPECT_NEAR(r.logprob.top[1].second, std::log(0.3), 1e-5);
}

// The sampler's exponential (shared with the device sampler) against the C library's.
TEST(Sampler, PortableExpIsWithinAFewUlpOfStdExp) {
  std::mt19937_64 random(5);
  std::uniform_real_distribution<double> x(-720.0, 5.0);
  double worst = 0;
  for (int i = 0; i < 200000; ++i) {
    const double v = i < 1000 ? -0.001 * i : x(random);
    const double expected = std::exp(v);
    if (expected < 0x1p-1021) {
      EXPECT_GE(sampling_exp(v), 0.0);
      EXPECT_LE(sampling_exp(v), 0x1p-1021);
      continue;
    }
    worst = std::max(worst, std::fabs(sampling_exp(v) - expected) / expected);
  }
  EXPECT_LT(worst, 8 * 0x1p-53);
  EXPECT_EQ(sampling_exp(0.0), 1.0);
  EXPECT_EQ(sampling_exp(-std::numeric_limits<double>::infinity()), 0.0);
}

TEST(SamplingParams, RejectsBadValuesWithClearMessages) {
  auto message = [](auto edit) {
    SamplingParams p;
    edit(p);
    try {
      p.validate(10, 100, 1000);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message([](SamplingParams& p) { p.temperature = -1; }).find("temperature"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.top_p = 0; }).find("top_p"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.top_p = 1.5; }).find("top_p"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.max_tokens = 0; }).find("max_tokens"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.max_tokens = 91; }).find("maximum context length of 100"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.stop_token_ids = {5000}; }).find("stop_token_ids"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.n = 0; }).find("n must"), std::string::npos);
  EXPECT_EQ(message([](SamplingParams& p) { p.max_tokens = 90; }), "");
}

TEST(StopStringChecker, StopSpanningPushesNeverLeaks) {
  StopStringChecker checker({"STOP", "\n\n"});
  std::string stop, out;
  out += checker.push("Hello S", &stop);
  EXPECT_EQ(out, "Hell");  // the last 3 bytes could still begin "STOP"
  out += checker.push("TO", &stop);
  EXPECT_TRUE(stop.empty());
  out += checker.push("P and more", &stop);
  EXPECT_EQ(stop, "STOP");
  EXPECT_EQ(out, "Hello ");
}

TEST(StopStringChecker, HeldTextIsReleasedWhenItCannotStop) {
  StopStringChecker checker({"abc"});
  std::string stop;
  EXPECT_EQ(checker.push("xa", &stop), "");  // up to len("abc") - 1 bytes are held
  EXPECT_EQ(checker.push("bx", &stop), "xa");
  EXPECT_EQ(checker.flush(), "bx");
  // A multi-byte character is never split.
  StopStringChecker wide({"zz"});
  EXPECT_EQ(wide.push("\xC3\xA9", &stop), "");
  EXPECT_EQ(wide.push("q", &stop), "\xC3\xA9");
}

}  // namespace
}  // namespace longctx

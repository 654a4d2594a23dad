// The GPU sampler (src/cuda/sampling.cu) against the engine's sample_token: exact token equality
// over thousands of random rows and parameter sets (greedy and sampled; top-k, top-p, min-p,
// penalties, banned ids; logits with ties, with -inf, with extreme magnitudes).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "cuda/cuda_check.h"
#include "cuda/sampling.h"
#include "engine/sampler.h"

namespace longctx {
namespace {

enum class Shape { kNormal, kTies, kPeaked, kExtreme, kWide };

std::vector<float> random_logits(int64_t vocab, Shape shape, std::mt19937_64& random) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> index(0, vocab - 1);
  std::vector<float> logits(static_cast<size_t>(vocab));
  const float scale = std::uniform_real_distribution<float>(0.3f, 6.0f)(random);
  for (float& v : logits) v = scale * normal(random);
  switch (shape) {
    case Shape::kNormal:
      break;
    case Shape::kTies:  // few distinct values: long runs of equal scores
      for (float& v : logits) v = std::round(v * 2.0f) / 2.0f;
      break;
    case Shape::kPeaked:  // an LLM-like row: a few tokens far above the rest
      for (int k = 0; k < 5; ++k) logits[static_cast<size_t>(index(random))] += 15.0f + 5.0f * normal(random);
      break;
    case Shape::kExtreme:
      for (int k = 0; k < 20; ++k) {
        const float values[] = {3e38f, -3e38f, -std::numeric_limits<float>::infinity(), 1e30f, -0.0f, 0.0f, 80.0f};
        logits[static_cast<size_t>(index(random))] = values[random() % 7];
      }
      break;
    case Shape::kWide:  // spread over hundreds: most of the row drops out of every sum
      for (float& v : logits) v *= 40.0f;
      break;
  }
  return logits;
}

struct Case {
  int64_t vocab = 0;
  std::vector<float> logits;
  SamplingParams params;
  PenaltyState penalties;
  std::vector<PenaltyEntry> entries;
  std::vector<int32_t> banned;
  uint64_t seed = 0;
  int64_t stream = 0, position = 0;
};

Case random_case(int64_t vocab, std::mt19937_64& random) {
  Case c;
  c.vocab = vocab;
  const Shape shape = static_cast<Shape>(random() % 5);
  c.logits = random_logits(vocab, shape, random);
  auto pick = [&](std::initializer_list<double> values) { return *(values.begin() + random() % values.size()); };
  SamplingParams& p = c.params;
  p.temperature = pick({0.0, 0.0, 0.2, 0.7, 1.0, 1.0, 1.3, 3.0});
  p.top_k = static_cast<int64_t>(pick({-1, -1, 0, 1, 2, 40, 1000}));
  p.top_p = pick({1.0, 1.0, 0.9, 0.95, 0.5, 0.1, 0.999999});
  p.min_p = pick({0.0, 0.0, 0.05, 0.3, 1e-12, 1.0});
  p.repetition_penalty = pick({1.0, 1.0, 1.2, 0.8});
  p.presence_penalty = pick({0.0, 0.0, 0.5, -1.0});
  p.frequency_penalty = pick({0.0, 0.0, 0.3, -0.7});
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> prompt(static_cast<size_t>(random() % 200));
  for (int32_t& t : prompt) t = token(random);
  c.penalties.init(prompt, vocab, p);
  const int outputs = static_cast<int>(random() % 60);
  for (int k = 0; k < outputs; ++k) c.penalties.add_output(k % 3 == 0 && !prompt.empty() ? prompt[k % prompt.size()] : token(random));
  c.entries = c.penalties.entries(p);
  const int banned = static_cast<int>(random() % 4);
  for (int k = 0; k < banned; ++k) c.banned.push_back(token(random));
  c.seed = random();
  c.stream = static_cast<int64_t>(random() % 8);
  c.position = static_cast<int64_t>(random() % 5000);
  return c;
}

// Runs `count` random cases of one vocabulary size through the device sampler in batches of
// `batch`, each batch's rows in a shuffled order in the device buffer; every token must equal
// sample_token's. Returns the number of sampled (temperature > 0) cases.
int64_t compare(int64_t vocab, int count, int batch, uint64_t seed, cuda::DeviceSampler& sampler) {
  std::mt19937_64 random(seed);
  int64_t sampled = 0;
  for (int done = 0; done < count; done += batch) {
    const int rows = std::min(batch, count - done);
    std::vector<Case> cases;
    for (int r = 0; r < rows; ++r) cases.push_back(random_case(vocab, random));
    std::vector<int64_t> slot(static_cast<size_t>(rows));
    std::iota(slot.begin(), slot.end(), 0);
    std::shuffle(slot.begin(), slot.end(), random);
    std::vector<float> host(static_cast<size_t>(rows * vocab));
    std::vector<SamplingRow> requests(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      const Case& c = cases[static_cast<size_t>(r)];
      std::copy(c.logits.begin(), c.logits.end(), host.begin() + slot[static_cast<size_t>(r)] * vocab);
      SamplingRow& q = requests[static_cast<size_t>(r)];
      q.row = slot[static_cast<size_t>(r)];
      q.temperature = c.params.temperature;
      q.top_p = c.params.top_p;
      q.top_k = c.params.top_k;
      q.min_p = c.params.min_p;
      q.repetition_penalty = c.params.repetition_penalty;
      q.presence_penalty = c.params.presence_penalty;
      q.frequency_penalty = c.params.frequency_penalty;
      q.seed = c.seed;
      q.stream = c.stream;
      q.position = c.position;
      q.penalties = c.entries;
      q.banned = c.banned;
      q.return_logits = r % 7 == 0;
    }
    const cuda::DeviceBuffer<float> logits = cuda::to_device(host);
    SampleOutput out;
    sampler.sample(logits.data(), vocab, requests, &out, nullptr);
    EXPECT_EQ(out.tokens.size(), static_cast<size_t>(rows));
    size_t with_logits = 0;
    for (int r = 0; r < rows; ++r) {
      const Case& c = cases[static_cast<size_t>(r)];
      const SampleResult expected =
          sample_token(c.logits, c.params, c.penalties, c.seed, c.stream, c.position, c.banned);
      sampled += c.params.temperature > 0;
      EXPECT_EQ(out.tokens[static_cast<size_t>(r)], expected.token)
          << "vocab " << vocab << " row " << done + r << ": temperature " << c.params.temperature << " top_k "
          << c.params.top_k << " top_p " << c.params.top_p << " min_p " << c.params.min_p << " penalties "
          << c.params.repetition_penalty << "/" << c.params.presence_penalty << "/" << c.params.frequency_penalty;
      if (requests[static_cast<size_t>(r)].return_logits) {
        EXPECT_TRUE(std::equal(c.logits.begin(), c.logits.end(),
                               out.logits.begin() + static_cast<int64_t>(with_logits * static_cast<size_t>(vocab)),
                               [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }));
        ++with_logits;
      }
    }
    EXPECT_EQ(out.logits.size(), with_logits * static_cast<size_t>(vocab));
  }
  return sampled;
}

TEST(CudaSampling, SameTokensAsTheHostSamplerSmallVocabularies) {
  cuda::DeviceSampler sampler;
  int64_t sampled = 0;
  sampled += compare(50, 1500, 40, 1, sampler);    // ties and filters dominate
  sampled += compare(3000, 1500, 70, 2, sampler);  // several groups of 32 per call
  sampled += compare(20000, 400, 33, 3, sampler);  // heads longer than a shared-memory tile
  EXPECT_GT(sampled, 2000);
}

TEST(CudaSampling, SameTokensAsTheHostSamplerAtTheV4Vocabulary) {
  cuda::DeviceSampler sampler;
  EXPECT_GT(compare(129280, 160, 64, 4, sampler), 100);
}

// A row where every score is equal: the whole vocabulary is the head and one sorted run of ties.
TEST(CudaSampling, FlatRowsAndTinyFilters) {
  cuda::DeviceSampler sampler;
  const int64_t vocab = 129280;
  const std::vector<float> flat(static_cast<size_t>(vocab), 0.5f);
  const cuda::DeviceBuffer<float> logits = cuda::to_device(flat);
  PenaltyState none;
  for (const double top_p : {1.0, 0.5, 1e-9}) {
    for (const int64_t position : {0, 1, 2, 3}) {
      SamplingParams params;
      params.top_p = top_p;
      params.min_p = position == 3 ? 1e-3 : 0.0;
      SamplingRow row;
      row.top_p = top_p;
      row.min_p = params.min_p;
      row.seed = 99;
      row.position = position;
      SampleOutput out;
      sampler.sample(logits.data(), vocab, std::span<const SamplingRow>(&row, 1), &out, nullptr);
      EXPECT_EQ(out.tokens[0], sample_token(flat, params, none, 99, 0, position).token) << top_p << " " << position;
    }
  }
}

}  // namespace
}  // namespace longctx

// A prefix-cache hit gives exactly the logits of computing the prompt from scratch.
#include <gtest/gtest.h>

#include <random>

#include "engine/model_session.h"
#include "engine/sequence_runner.h"
#include "support/test_model_dir.h"

namespace longctx {
namespace {

TEST(PrefixCache, HitEqualsNoHitAcrossBoundaries) {
  auto model = std::make_shared<const LoadedModel>(testing::tiny_model_dir());
  std::mt19937 random(21);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(model->config().vocab_size) - 1);
  std::vector<int32_t> shared(1000);
  for (auto& t : shared) t = pick(random);

  SessionOptions options;
  options.max_tokens = 1100;
  options.max_sequences = 3;
  options.enable_prefix_caching = true;
  ModelSession cached(model, options);
  options.enable_prefix_caching = false;
  ModelSession uncached(model, options);

  // The first request fills the cache with the shared prompt.
  {
    SequenceRunner warm(cached.backend(), cached.kv());
    EXPECT_EQ(warm.match_prefix(shared), 0);
    warm.run(shared, 1);
    warm.commit();
  }
  for (const size_t common : {0, 1, 255, 256, 257, 1000}) {
    std::vector<int32_t> prompt(shared.begin(), shared.begin() + static_cast<long>(common));
    for (int i = 0; i < 40; ++i) prompt.push_back(pick(random));
    SequenceRunner hit(cached.backend(), cached.kv());
    const int64_t reused = hit.match_prefix(prompt);
    EXPECT_EQ(reused, static_cast<int64_t>(common / 256 * 256)) << common;
    const std::span<const int32_t> rest(prompt.data() + reused, prompt.size() - static_cast<size_t>(reused));
    const std::vector<float> with_hit = hit.run(rest, static_cast<int64_t>(rest.size())).logits;
    hit.commit();
    // Decode a few more tokens on top of the hit too.
    std::vector<float> decoded_hit;
    for (int32_t t : {5, 6, 7}) {
      const auto& out = hit.run(std::span<const int32_t>(&t, 1), 1);
      decoded_hit.insert(decoded_hit.end(), out.logits.begin(), out.logits.end());
      hit.commit();
    }

    SequenceRunner scratch(uncached.backend(), uncached.kv());
    const std::vector<float> all = scratch.run(prompt, static_cast<int64_t>(prompt.size())).logits;
    scratch.commit();
    std::vector<float> decoded_scratch;
    for (int32_t t : {5, 6, 7}) {
      const auto& out = scratch.run(std::span<const int32_t>(&t, 1), 1);
      decoded_scratch.insert(decoded_scratch.end(), out.logits.begin(), out.logits.end());
      scratch.commit();
    }
    const size_t vocab = static_cast<size_t>(model->config().vocab_size);
    ASSERT_EQ(with_hit.size(), rest.size() * vocab);
    EXPECT_TRUE(std::equal(with_hit.begin(), with_hit.end(), all.end() - static_cast<long>(with_hit.size())))
        << "shared " << common;
    EXPECT_EQ(decoded_hit, decoded_scratch) << "shared " << common;
  }
  EXPECT_GT(cached.kv().stats().prefix_hit_tokens, 0);
}

}  // namespace
}  // namespace longctx

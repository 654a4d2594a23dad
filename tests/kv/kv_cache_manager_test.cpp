#include "kv/kv_cache_manager.h"

#include <gtest/gtest.h>

#include <numeric>

#include "longctx/error.h"
#include "model/test_model.h"

namespace longctx {
namespace {

// The tiny preset: window 16, ratio-4 and ratio-128 pools.
KvLayout tiny_layout() { return make_kv_layout(test_model_preset("tiny"), KvCacheOptions{}); }

std::vector<int32_t> tokens(int32_t count, int32_t start = 0) {
  std::vector<int32_t> t(static_cast<size_t>(count));
  std::iota(t.begin(), t.end(), start);
  return t;
}

int32_t free_of(const KvCacheManager& kv, size_t pool) { return kv.stats().free_pages[pool]; }

TEST(KvCacheManager, ReserveAllocatesPerBlockAndPool) {
  const KvLayout layout = tiny_layout();
  ASSERT_EQ(layout.compressed_ratios, (std::vector<int>{4, 128}));
  KvCacheManager kv(layout, {8, {8, 8}}, false);
  const auto id = kv.add_sequence();
  ASSERT_TRUE(kv.reserve(id, 300));  // blocks 0 and 1
  const BlockTables& t = kv.tables(id);
  EXPECT_EQ(t.window.size(), 2u);
  EXPECT_EQ(t.compressed[0].size(), 2u);
  EXPECT_EQ(t.compressed[1].size(), 2u);
  EXPECT_EQ(free_of(kv, 0), 6);
  EXPECT_EQ(free_of(kv, 1), 6);
  // Reserving what is already held takes nothing.
  ASSERT_TRUE(kv.reserve(id, 512));
  EXPECT_EQ(free_of(kv, 1), 6);
  kv.free_sequence(id);
  EXPECT_EQ(free_of(kv, 0), 8);
  EXPECT_EQ(free_of(kv, 1), 8);
  EXPECT_EQ(kv.referenced_pages(), 0);
}

TEST(KvCacheManager, ExhaustionFailsCleanlyWithoutPartialAllocation) {
  KvCacheManager kv(tiny_layout(), {8, {3, 8}}, false);
  const auto a = kv.add_sequence();
  ASSERT_TRUE(kv.reserve(a, 512));  // 2 blocks
  const auto b = kv.add_sequence();
  EXPECT_FALSE(kv.can_reserve(b, 512));
  EXPECT_FALSE(kv.reserve(b, 512));  // needs 2 c4a pages, 1 left
  EXPECT_TRUE(kv.tables(b).window.empty());
  EXPECT_EQ(free_of(kv, 1), 1);
  EXPECT_EQ(free_of(kv, 0), 6);
  EXPECT_TRUE(kv.reserve(b, 256));
  kv.free_sequence(a);
  EXPECT_TRUE(kv.reserve(b, 768));
}

TEST(KvCacheManager, WindowPagesBehindTheWindowAreGivenBack) {
  KvCacheManager kv(tiny_layout(), {3, {8, 8}}, false);
  const auto id = kv.add_sequence();
  ASSERT_TRUE(kv.reserve(id, 256));
  kv.commit(id, tokens(256));
  ASSERT_TRUE(kv.reserve(id, 257));
  EXPECT_EQ(free_of(kv, 0), 1);
  kv.commit(id, tokens(1, 256));
  // Position 257 looks back 15 positions (window 16), still into block 0.
  EXPECT_NE(kv.tables(id).window[0], kNoPage);
  ASSERT_TRUE(kv.reserve(id, 272));
  kv.commit(id, tokens(15, 257));
  // The next query, at 272, sees 257..272: block 0 is no longer needed.
  EXPECT_EQ(kv.tables(id).window[0], kNoPage);
  EXPECT_EQ(free_of(kv, 0), 2);
  // Committing past the reservation is refused.
  EXPECT_THROW(kv.commit(id, tokens(300, 272)), Error);
}

TEST(KvCacheManager, ReleasingTwiceAndUnknownSequencesAreErrors) {
  KvCacheManager kv(tiny_layout(), {4, {4, 4}}, false);
  const auto id = kv.add_sequence();
  ASSERT_TRUE(kv.reserve(id, 10));
  kv.free_sequence(id);
  EXPECT_THROW(kv.free_sequence(id), Error);
  EXPECT_THROW(kv.reserve(id, 10), Error);
  EXPECT_THROW((void)kv.tables(12345), Error);
  EXPECT_EQ(kv.referenced_pages(), 0);
}

TEST(KvCacheManager, PrefixCacheSharesFullBlocksWithRefCounts) {
  KvCacheManager kv(tiny_layout(), {8, {8, 8}}, true);
  const std::vector<int32_t> prompt = tokens(600);
  const auto a = kv.add_sequence();
  EXPECT_EQ(kv.match_prefix(a, prompt), 0);
  ASSERT_TRUE(kv.reserve(a, 600));
  kv.commit(a, prompt);
  EXPECT_EQ(kv.stats().cached_blocks, 2);

  const auto b = kv.add_sequence();
  EXPECT_EQ(kv.match_prefix(b, prompt), 512);
  // Shared compressed pages of both blocks; the window page of block 1 only.
  EXPECT_EQ(kv.tables(b).compressed[0][0], kv.tables(a).compressed[0][0]);
  EXPECT_EQ(kv.tables(b).compressed[1][1], kv.tables(a).compressed[1][1]);
  EXPECT_EQ(kv.tables(b).window[0], kNoPage);
  EXPECT_NE(kv.tables(b).window[1], kNoPage);
  EXPECT_EQ(kv.computed(b), 512);
  EXPECT_EQ(kv.stats().prefix_hit_tokens, 512);
  EXPECT_EQ(kv.stats().prefix_queried_tokens, 1200);

  // Freeing one holder keeps the pages for the other, then they become evictable cache.
  kv.free_sequence(a);
  EXPECT_GT(kv.referenced_pages(), 0);
  kv.free_sequence(b);
  EXPECT_EQ(kv.referenced_pages(), 0);
  EXPECT_EQ(kv.stats().cached_pages[1], 2);

  // A prompt that diverges inside block 1 reuses block 0 only; a whole cached prompt keeps
  // one token to compute.
  std::vector<int32_t> other = prompt;
  other[300] = 9999;
  const auto c = kv.add_sequence();
  EXPECT_EQ(kv.match_prefix(c, other), 256);
  kv.free_sequence(c);
  const auto d = kv.add_sequence();
  EXPECT_EQ(kv.match_prefix(d, std::vector<int32_t>(prompt.begin(), prompt.begin() + 512)), 256);
  kv.free_sequence(d);
}

TEST(KvCacheManager, EvictionTakesTheLeastRecentlyUsedCachedPages) {
  // Room for exactly two blocks in each compressed pool.
  KvCacheManager kv(tiny_layout(), {4, {2, 2}}, true);
  const std::vector<int32_t> first = tokens(257, 0);
  const std::vector<int32_t> second = tokens(257, 1000);
  for (const auto* prompt : {&first, &second}) {
    const auto id = kv.add_sequence();
    ASSERT_EQ(kv.match_prefix(id, *prompt), 0);
    ASSERT_TRUE(kv.reserve(id, 256));
    kv.commit(id, std::span<const int32_t>(prompt->data(), 256));
    kv.free_sequence(id);
  }
  EXPECT_EQ(kv.stats().cached_blocks, 2);
  // Touch the first prompt's block so the second becomes least recently used.
  const auto touch = kv.add_sequence();
  ASSERT_EQ(kv.match_prefix(touch, first), 256);
  kv.free_sequence(touch);
  // A new block must evict one cached page per pool: the second prompt's.
  const auto fresh = kv.add_sequence();
  ASSERT_TRUE(kv.reserve(fresh, 10));
  kv.free_sequence(fresh);
  const auto again_first = kv.add_sequence();
  EXPECT_EQ(kv.match_prefix(again_first, first), 256);
  kv.free_sequence(again_first);
  const auto again_second = kv.add_sequence();
  EXPECT_EQ(kv.match_prefix(again_second, second), 0);
  kv.free_sequence(again_second);
  EXPECT_EQ(kv.referenced_pages(), 0);
}

TEST(KvCacheManager, ClearingThePrefixCacheFreesEverythingUnreferenced) {
  KvCacheManager kv(tiny_layout(), {8, {8, 8}}, true);
  const auto a = kv.add_sequence();
  ASSERT_TRUE(kv.reserve(a, 512));
  kv.commit(a, tokens(512));
  kv.free_sequence(a);
  EXPECT_GT(kv.stats().cached_pages[1], 0);
  kv.clear_prefix_cache();
  EXPECT_EQ(kv.stats().cached_blocks, 0);
  EXPECT_EQ(free_of(kv, 1), 8);
  EXPECT_EQ(free_of(kv, 0), 8);
}

}  // namespace
}  // namespace longctx

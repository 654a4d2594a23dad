#include "cpu/cpu_compressor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "model/test_model.h"

namespace longctx::cpu {
namespace {

// A compressor of ratio `ratio` on layer `layer` of the tiny preset, with random ape and norm,
// its own KV storage, and random projections for `positions` positions.
class CompressorHarness {
 public:
  CompressorHarness(int64_t layer, int64_t positions, uint64_t seed)
      : config_(test_model_preset("tiny")),
        layout_(make_kv_layout(config_, KvCacheOptions{})),
        rope_(RopeTable::for_layer(config_, 4)),
        storage_(layout_, pool_sizes_for_blocks(layout_, 4, 1)),
        positions_(positions) {
    const int ratio = config_.compress_ratio(layer);
    std::mt19937 random(static_cast<uint32_t>(seed));
    std::normal_distribution<float> normal;
    CompressorWeights& c = weights_.compressor.emplace();
    c.ratio = ratio;
    c.overlap = ratio == 4;
    c.head_dim = config_.head_dim;
    for (int64_t i = 0; i < ratio * c.width(); ++i) c.ape.push_back(normal(random));
    for (int64_t i = 0; i < c.head_dim; ++i) c.norm.push_back(1.0f + 0.1f * normal(random));
    kv_.resize(static_cast<size_t>(positions * c.width()));
    score_.resize(kv_.size());
    for (auto& v : kv_) v = normal(random);
    for (auto& v : score_) v = 2.0f * normal(random);
    context_ = std::make_unique<LayerContext>(config_, weights_, layout_.layers[static_cast<size_t>(layer)],
                                              rope_, storage_, KvCacheOptions{});
    const int64_t blocks = (positions + kKvBlockSize - 1) / kKvBlockSize;
    tables_.compressed.resize(layout_.compressed_ratios.size());
    for (int64_t b = 0; b < blocks; ++b) {
      tables_.window.push_back(static_cast<int32_t>(b));
      for (auto& table : tables_.compressed) table.push_back(static_cast<int32_t>(b));
    }
  }

  // Feeds positions [begin, end) as one chunk.
  void feed(int64_t begin, int64_t end) {
    // The chunk's rows are the harness's rows [begin, end).
    const int64_t width = weights_.compressor->width();
    const ChunkView chunk{0, end - begin, begin, &tables_};
    run_compressors(*context_, chunk, kv_.data() + begin * width, score_.data() + begin * width,
                    nullptr, nullptr);
  }

  std::vector<float> stored_entry(int64_t index) const {
    std::vector<float> values(static_cast<size_t>(config_.head_dim));
    const ChunkView chunk{0, 1, 0, &tables_};
    context_->kv_codec.decode(context_->entry_bytes(chunk, index), values.data());
    return values;
  }

  // The entry computed directly: a softmax over the candidates of every channel, in double.
  std::vector<float> expected_entry(int64_t index) const {
    const CompressorWeights& c = *weights_.compressor;
    const int64_t d = c.head_dim;
    const int64_t width = c.width();
    std::vector<float> pooled(static_cast<size_t>(d));
    for (int64_t ch = 0; ch < d; ++ch) {
      std::vector<std::pair<double, double>> candidates;  // (logit, value)
      auto add = [&](int64_t position, int64_t channel) {
        const size_t at = static_cast<size_t>(position * width + channel);
        const double ape = c.ape[static_cast<size_t>((position % c.ratio) * width + channel)];
        candidates.push_back({score_[at] + ape, kv_[at]});
      };
      if (c.overlap) {
        // Block index - 1 through the first channel half (nothing before block 0).
        for (int64_t p = (index - 1) * c.ratio; index > 0 && p < index * c.ratio; ++p) add(p, ch);
        for (int64_t p = index * c.ratio; p < (index + 1) * c.ratio; ++p) add(p, d + ch);
      } else {
        for (int64_t p = index * c.ratio; p < (index + 1) * c.ratio; ++p) add(p, ch);
      }
      double max_logit = -1e300;
      for (const auto& [logit, value] : candidates) max_logit = std::max(max_logit, logit);
      double total = 0, weighted = 0;
      for (const auto& [logit, value] : candidates) {
        total += std::exp(logit - max_logit);
        weighted += std::exp(logit - max_logit) * value;
      }
      pooled[static_cast<size_t>(ch)] = static_cast<float>(weighted / total);
    }
    finish_main_entry(*context_, index, pooled.data());
    return pooled;
  }

  int64_t nope() const { return config_.nope_head_dim(); }

 private:
  ModelConfig config_;
  KvLayout layout_;
  RopeTable rope_;
  CpuKvStorage storage_;
  AttentionWeights weights_;
  std::unique_ptr<LayerContext> context_;
  BlockTables tables_;
  int64_t positions_;
  std::vector<float> kv_, score_;
};

// Entries agree to fp32 rounding, except that a non-rope value may land one fp8 step apart.
void expect_entries_close(const std::vector<float>& actual, const std::vector<float>& expected,
                          int64_t nope) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    const float tolerance = static_cast<int64_t>(i) < nope ? 0.07f * std::fabs(expected[i]) + 1e-6f
                                                            : 1e-4f * (1.0f + std::fabs(expected[i]));
    EXPECT_NEAR(actual[i], expected[i], tolerance) << "channel " << i;
  }
}

TEST(Compressor, OverlappingFirstEntryIgnoresBlockMinusOne) {
  CompressorHarness harness(/*layer=*/1, 8, 11);  // tiny preset: layer 1 has ratio 4
  harness.feed(0, 8);
  expect_entries_close(harness.stored_entry(0), harness.expected_entry(0), harness.nope());
  expect_entries_close(harness.stored_entry(1), harness.expected_entry(1), harness.nope());
}

TEST(Compressor, StateCarriesAcrossChunksAndBlocks) {
  CompressorHarness whole(1, 264, 12);
  whole.feed(0, 264);
  CompressorHarness chunked(1, 264, 12);
  chunked.feed(0, 3);
  chunked.feed(3, 130);
  chunked.feed(130, 256);
  chunked.feed(256, 257);
  chunked.feed(257, 264);
  for (int64_t e = 0; e < 66; ++e) EXPECT_EQ(whole.stored_entry(e), chunked.stored_entry(e)) << e;
  // Entry 64 pools positions 252..259, across the first block boundary.
  expect_entries_close(whole.stored_entry(64), whole.expected_entry(64), whole.nope());
  expect_entries_close(whole.stored_entry(65), whole.expected_entry(65), whole.nope());
}

TEST(Compressor, Ratio128PoolsWholeBlocks) {
  CompressorHarness harness(/*layer=*/2, 256, 13);  // tiny preset: layer 2 has ratio 128
  harness.feed(0, 200);
  harness.feed(200, 256);
  expect_entries_close(harness.stored_entry(0), harness.expected_entry(0), harness.nope());
  expect_entries_close(harness.stored_entry(1), harness.expected_entry(1), harness.nope());
}

}  // namespace
}  // namespace longctx::cpu

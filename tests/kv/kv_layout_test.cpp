#include "kv/kv_layout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/block_quant.h"
#include "common/float_formats.h"
#include "common/mapped_file.h"
#include "kv/kv_entry_codec.h"
#include "kv/memory_plan.h"
#include "longctx/error.h"

namespace longctx {
namespace {

ModelConfig fixture_config(const std::string& name) {
  return parse_model_config(
      read_text_file(std::string(LONGCTX_SOURCE_DIR) + "/tests/fixtures/" + name, 1 << 20), name);
}

TEST(KvLayout, ProPageSizesMatchTheReleasedCacheArithmetic) {
  const KvLayout layout = make_kv_layout(fixture_config("deepseek-v4-pro-config.json"),
                                         {KvDtype::kBF16, IndexerKeyDtype::kBF16});
  ASSERT_EQ(layout.compressed_ratios, (std::vector<int>{4, 128}));
  const LayerKvLayout& c4a = layout.layers[2];
  const LayerKvLayout& c128a = layout.layers[1];
  EXPECT_EQ(c4a.entries_per_page, 64);
  EXPECT_EQ(c4a.compressed_page_bytes, 64u * 1024 + 64u * 256);  // main + indexer keys
  EXPECT_EQ(c128a.entries_per_page, 2);
  EXPECT_EQ(c128a.compressed_page_bytes, 2u * 1024);
  EXPECT_EQ(c4a.window_ring_bytes, 128u * 1024);
  EXPECT_EQ(layout.layers.back().ratio, 0);  // the MTP block: window only
  EXPECT_DOUBLE_EQ(layout.compressed_bytes_per_token(), 9848.0);
}

TEST(KvLayout, EntrySizesPerDtype) {
  EXPECT_EQ(kv_entry_bytes(KvDtype::kF32, 512, 64), 2048u);
  EXPECT_EQ(kv_entry_bytes(KvDtype::kBF16, 512, 64), 1024u);
  // 448 e4m3 + 64 bf16 rope + 7 scales, padded to 8 bytes.
  EXPECT_EQ(kv_entry_bytes(KvDtype::kFP8, 512, 64), 584u);
  EXPECT_EQ(indexer_key_bytes(IndexerKeyDtype::kFP4, 128), 68u);
  EXPECT_THROW(parse_kv_dtype("int3"), Error);
}

TEST(KvEntryCodec, Fp8StorageIsLosslessForFp8SimulatedVectors) {
  std::mt19937 random(4);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> v(512);
  for (auto& x : v) x = normal(random);
  fp8_simulate_blocks(v.data(), 448, 64);  // what the model stores: fp8 non-rope part
  for (size_t i = 448; i < 512; ++i) v[i] = round_to_bf16(v[i]);
  const KvEntryCodec codec{KvDtype::kFP8, 512, 64};
  std::vector<uint8_t> bytes(kv_entry_bytes(KvDtype::kFP8, 512, 64));
  codec.encode(v.data(), bytes.data());
  std::vector<float> back(512);
  codec.decode(bytes.data(), back.data());
  EXPECT_EQ(back, v);
  // fp4 indexer keys after the model's fp4 simulation.
  std::vector<float> key(128);
  for (auto& x : key) x = normal(random);
  fp4_simulate_blocks(key.data(), 128, 32);
  const IndexerKeyCodec key_codec{IndexerKeyDtype::kFP4, 128};
  std::vector<float> key_back = key;
  key_codec.round_trip(key_back.data());
  EXPECT_EQ(key_back, key);
}

TEST(MemoryPlan, ProAtOneMillionTokensInBf16) {
  const MemoryPlan plan = plan_memory(fixture_config("deepseek-v4-pro-config.json"),
                                      {KvDtype::kBF16, IndexerKeyDtype::kBF16}, 1048576, 0);
  EXPECT_DOUBLE_EQ(plan.bytes_per_token, 9848.0);
  const std::string text = format_memory_plan(plan, {KvDtype::kBF16, IndexerKeyDtype::kBF16});
  EXPECT_NE(text.find("bytes per token (all layers): 9848"), std::string::npos) << text;
  EXPECT_NE(text.find("1048576 tokens: 9.62 GiB"), std::string::npos) << text;
  ASSERT_EQ(plan.kinds.size(), 2u);
  EXPECT_EQ(plan.kinds[0].kind, "c128a");
  EXPECT_EQ(plan.kinds[0].layers, 31);
  EXPECT_EQ(plan.kinds[1].kind, "c4a");
  EXPECT_EQ(plan.kinds[1].layers, 30);
  EXPECT_DOUBLE_EQ(plan.kinds[1].bytes_per_token, 320.0);
}

TEST(MemoryPlan, FlashAndCompressedFormats) {
  const ModelConfig flash = fixture_config("deepseek-v4-flash-config.json");
  const MemoryPlan bf16 = plan_memory(flash, {KvDtype::kBF16, IndexerKeyDtype::kBF16}, 1048576, 0);
  EXPECT_DOUBLE_EQ(bf16.bytes_per_token, 21 * 320.0 + 20 * 8.0);  // 6880
  const MemoryPlan fp8 = plan_memory(flash, {KvDtype::kFP8, IndexerKeyDtype::kFP4}, 1048576, 0);
  EXPECT_DOUBLE_EQ(fp8.bytes_per_token, 21 * (584 + 68) / 4.0 + 20 * 584 / 128.0);
  EXPECT_LT(fp8.bytes_per_token, 0.55 * bf16.bytes_per_token);
  // With 141 GiB a Flash checkpoint (150 GiB of weights) leaves no room; with experts cut it fits.
  ModelConfig small = flash;
  small.n_routed_experts = 8;
  const MemoryPlan fits = plan_memory(small, {KvDtype::kBF16, IndexerKeyDtype::kBF16}, 1048576, 141.0 * (1 << 30));
  EXPECT_GT(fits.sequences_that_fit, 1);
  EXPECT_EQ(plan_memory(flash, {KvDtype::kBF16, IndexerKeyDtype::kBF16}, 1048576, 141.0 * (1 << 30)).sequences_that_fit, 0);
}

}  // namespace
}  // namespace longctx

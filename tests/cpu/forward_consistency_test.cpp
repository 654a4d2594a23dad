// The CPU forward computes the same logits however a sequence is fed: one prefill, chunked
// prefill, one-token decode steps, or inside a batch with other sequences.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>

#include "engine/model_session.h"
#include "engine/sequence_runner.h"
#include "support/test_model_dir.h"

namespace longctx {
namespace {

std::vector<int32_t> random_tokens(size_t n, uint32_t seed, int32_t vocab) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = pick(random);
  return tokens;
}

class ForwardConsistency : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = std::make_shared<const LoadedModel>(testing::tiny_model_dir());
    tokens_ = random_tokens(520, 99, static_cast<int32_t>(model_->config().vocab_size));
  }
  static void TearDownTestSuite() { model_.reset(); }

  // Logits of every position, fed as the given sequence of step sizes (the rest one by one).
  static std::vector<float> run(const std::vector<int32_t>& tokens, const std::vector<int64_t>& steps,
                                KvCacheOptions kv = {}) {
    SessionOptions options;
    options.kv = kv;
    options.max_tokens = static_cast<int64_t>(tokens.size());
    ModelSession session(model_, options);
    SequenceRunner runner(session.backend(), session.kv());
    std::vector<float> logits;
    size_t position = 0;
    size_t step_index = 0;
    while (position < tokens.size()) {
      const size_t size = step_index < steps.size() ? static_cast<size_t>(steps[step_index++]) : 1;
      const ForwardOutput& out = runner.run(std::span<const int32_t>(tokens.data() + position, size),
                                            static_cast<int64_t>(size));
      logits.insert(logits.end(), out.logits.begin(), out.logits.end());
      runner.commit();
      position += size;
    }
    return logits;
  }

  // Largest |a - b| / max|b| over the positions, per position.
  static double max_relative_error(const std::vector<float>& a, const std::vector<float>& b, size_t positions) {
    const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
    double worst = 0;
    for (size_t p = 0; p < positions; ++p) {
      double diff = 0, scale = 0;
      for (size_t v = 0; v < vocab; ++v) {
        diff = std::max(diff, static_cast<double>(std::fabs(a[p * vocab + v] - b[p * vocab + v])));
        scale = std::max(scale, static_cast<double>(std::fabs(b[p * vocab + v])));
      }
      worst = std::max(worst, diff / std::max(scale, 1e-30));
    }
    return worst;
  }

  static std::shared_ptr<const LoadedModel> model_;
  static std::vector<int32_t> tokens_;
};

std::shared_ptr<const LoadedModel> ForwardConsistency::model_;
std::vector<int32_t> ForwardConsistency::tokens_;

TEST_F(ForwardConsistency, DecodeEqualsPrefillAcrossEveryBoundary) {
  const std::vector<float> decoded = run(tokens_, {1});  // --prefill 1
  const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
  ASSERT_EQ(decoded.size(), tokens_.size() * vocab);
  // Lengths crossing the window (16), the compression blocks (4, 128) and the KV blocks (256).
  for (const size_t length : {1, 3, 4, 5, 15, 16, 17, 127, 128, 129, 255, 256, 257, 300, 520}) {
    const std::vector<int32_t> prefix(tokens_.begin(), tokens_.begin() + static_cast<long>(length));
    const std::vector<float> prefilled = run(prefix, {static_cast<int64_t>(length)});
    const double error = max_relative_error(prefilled, decoded, length);
    EXPECT_LE(error, 1e-3) << "length " << length;
    // The reference computes each position with the same operations either way.
    EXPECT_TRUE(std::equal(prefilled.begin(), prefilled.end(), decoded.begin())) << "length " << length;
    std::printf("decode vs prefill, length %zu: max relative error %.3g\n", length, error);
  }
}

TEST_F(ForwardConsistency, ChunkedPrefillEqualsOnePrefill) {
  const std::vector<float> whole = run(tokens_, {520});
  EXPECT_EQ(run(tokens_, {100, 100, 100, 100, 100, 20}), whole);
  EXPECT_EQ(run(tokens_, {37, 219, 1, 255, 8}), whole);
  EXPECT_EQ(run(tokens_, {256, 256, 8}), whole);
}

TEST_F(ForwardConsistency, StorageDtypesKeepDecodeEqualToPrefill) {
  for (const KvCacheOptions kv : {KvCacheOptions{KvDtype::kBF16, IndexerKeyDtype::kBF16},
                                  KvCacheOptions{KvDtype::kFP8, IndexerKeyDtype::kFP4}}) {
    const std::vector<int32_t> prefix(tokens_.begin(), tokens_.begin() + 300);
    const std::vector<float> whole = run(prefix, {300}, kv);
    const std::vector<float> mixed = run(prefix, {130}, kv);  // then 170 decode steps
    EXPECT_EQ(whole, mixed) << to_string(kv.kv_dtype);
  }
  // fp8 storage of the non-rope dims is lossless after the model's own fp8 simulation, and
  // fp4 indexer keys after its fp4 simulation: the same logits as bf16 storage.
  const std::vector<int32_t> prefix(tokens_.begin(), tokens_.begin() + 300);
  EXPECT_EQ(run(prefix, {300}, {KvDtype::kFP8, IndexerKeyDtype::kFP4}),
            run(prefix, {300}, {KvDtype::kBF16, IndexerKeyDtype::kBF16}));
}

TEST_F(ForwardConsistency, BatchOfSequencesEqualsEachAlone) {
  const std::vector<int32_t> a(tokens_.begin(), tokens_.begin() + 70);
  const std::vector<int32_t> b(tokens_.begin() + 100, tokens_.begin() + 300);
  const std::vector<float> alone_a = run(a, {70});
  const std::vector<float> alone_b = run(b, {200});
  SessionOptions options;
  options.max_tokens = 200;
  options.max_sequences = 2;
  ModelSession session(model_, options);
  KvCacheManager& kv = session.kv();
  const auto id_a = kv.add_sequence();
  const auto id_b = kv.add_sequence();
  ASSERT_TRUE(kv.reserve(id_a, 70));
  ASSERT_TRUE(kv.reserve(id_b, 200));
  ForwardBatch batch;
  batch.chunks.push_back({b, 0, &kv.tables(id_b), 200});
  batch.chunks.push_back({a, 0, &kv.tables(id_a), 70});
  ForwardOutput out;
  session.backend().forward(batch, &out);
  const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
  ASSERT_EQ(out.rows, 270);
  EXPECT_TRUE(std::equal(alone_b.begin(), alone_b.end(), out.logits.begin()));
  EXPECT_TRUE(std::equal(alone_a.begin(), alone_a.end(), out.logits.begin() + 200 * static_cast<long>(vocab)));
}

TEST_F(ForwardConsistency, MtpDecodeEqualsMtpPrefill) {
  const ModelConfig& c = model_->config();
  const size_t n = 140;
  auto run_mtp = [&](size_t prefill) {
    SessionOptions options;
    options.max_tokens = static_cast<int64_t>(n);
    ModelSession session(model_, options);
    SequenceRunner runner(session.backend(), session.kv());
    std::vector<float> logits;
    size_t position = 0;
    while (position < n) {
      const size_t size = position == 0 ? prefill : 1;
      const ForwardOutput& out = runner.run(std::span<const int32_t>(tokens_.data() + position, size),
                                            static_cast<int64_t>(size), true);
      const std::vector<float> hidden = out.hidden;
      const ForwardOutput& mtp = runner.run_mtp(
          std::span<const int32_t>(tokens_.data() + position + 1, size), hidden, static_cast<int64_t>(size));
      logits.insert(logits.end(), mtp.logits.begin(), mtp.logits.end());
      runner.commit();
      position += size;
    }
    return logits;
  };
  const std::vector<float> whole = run_mtp(n);
  EXPECT_EQ(whole.size(), n * static_cast<size_t>(c.vocab_size));
  EXPECT_EQ(run_mtp(1), whole);
  EXPECT_EQ(run_mtp(33), whole);
}

TEST_F(ForwardConsistency, CliPrefillOneMatchesFullPrefill) {
  const std::string dir = testing::tiny_model_dir();
  std::string list;
  for (size_t i = 0; i < 40; ++i) {
    if (i > 0) list.push_back(',');
    list.append(std::to_string(tokens_[i]));
  }
  const std::string full = dir + "/full.bin";
  const std::string decode = dir + "/decode.bin";
  const std::string cli = LONGCTX_CLI_PATH;
  ASSERT_EQ(std::system((cli + " logits --model " + dir + " --tokens " + list + " --output " + full + " 2>/dev/null").c_str()), 0);
  ASSERT_EQ(std::system((cli + " logits --model " + dir + " --tokens " + list + " --prefill 1 --output " + decode + " 2>/dev/null").c_str()), 0);
  auto read = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
    return bytes;
  };
  const std::vector<char> a = read(full);
  EXPECT_EQ(a.size(), 40u * static_cast<size_t>(model_->config().vocab_size) * 4);
  EXPECT_EQ(a, read(decode));
  // Bad input is a clear error, not a crash.
  EXPECT_NE(std::system((cli + " logits --model " + dir + " --tokens 1,99999 --output " + full + " 2>/dev/null").c_str()), 0);
  EXPECT_NE(std::system((cli + " logits --model " + dir + " --tokens 1,x --output " + full + " 2>/dev/null").c_str()), 0);
}

}  // namespace
}  // namespace longctx

// The CUDA backend end to end against the CPU reference, and its own consistency: decode
// equals prefill, chunked prefill equals one prefill, a batch equals each sequence alone
// (bitwise: the backend is batch-invariant), for every KV storage dtype, and the MTP block.
//
// Models: the bundled tiny model (fp8 linears, fp4 experts: chaotic, one fp8 flip moves later
// logits by percents) and the low-chaos probe (bf16 weights, hash routing in every layer,
// index_topk 512 so the indexer keeps every entry).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "engine/model_session.h"
#include "longctx/error.h"
#include "engine/sequence_runner.h"
#include "model/test_model.h"
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

struct Comparison {
  double max_relative = 0;    // max over positions of max|a - b| / max|b|
  double top1_agreement = 0;  // fraction of positions with the same argmax
  int64_t first_mismatch = -1;  // first position with relative error above 1e-3
};

Comparison compare(const std::vector<float>& a, const std::vector<float>& b, int64_t vocab) {
  Comparison c;
  const int64_t positions = static_cast<int64_t>(b.size()) / vocab;
  int64_t agree = 0;
  for (int64_t p = 0; p < positions; ++p) {
    double diff = 0, scale = 0;
    int64_t arg_a = 0, arg_b = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const float x = a[static_cast<size_t>(p * vocab + v)];
      const float y = b[static_cast<size_t>(p * vocab + v)];
      diff = std::max(diff, static_cast<double>(std::fabs(x - y)));
      scale = std::max(scale, static_cast<double>(std::fabs(y)));
      if (x > a[static_cast<size_t>(p * vocab + arg_a)]) arg_a = v;
      if (y > b[static_cast<size_t>(p * vocab + arg_b)]) arg_b = v;
    }
    const double relative = diff / std::max(scale, 1e-30);
    c.max_relative = std::max(c.max_relative, relative);
    if (relative > 1e-3 && c.first_mismatch < 0) c.first_mismatch = p;
    agree += arg_a == arg_b;
  }
  c.top1_agreement = positions > 0 ? static_cast<double>(agree) / static_cast<double>(positions) : 1.0;
  return c;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tiny_ = std::make_shared<const LoadedModel>(testing::tiny_model_dir());
    ModelConfig probe = test_model_preset("tiny", 4);
    probe.linear_format = WeightFormat::kBF16;
    probe.expert_format = WeightFormat::kBF16;
    probe.num_hash_layers = 4;
    probe.index_topk = 512;
    probe_ = std::make_shared<const LoadedModel>(testing::test_model_dir("cuda-probe", probe, 0));
    tokens_ = random_tokens(520, 99, static_cast<int32_t>(tiny_->config().vocab_size));
  }
  static void TearDownTestSuite() {
    tiny_.reset();
    probe_.reset();
  }

  // Logits of every position, fed as the given step sizes (the rest one by one).
  static std::vector<float> run(const std::shared_ptr<const LoadedModel>& model, const std::string& device,
                                const std::vector<int32_t>& tokens, const std::vector<int64_t>& steps,
                                KvCacheOptions kv = {}, std::vector<float>* mtp_logits = nullptr) {
    SessionOptions options;
    options.device = device;
    options.kv = kv;
    options.max_tokens = static_cast<int64_t>(tokens.size()) + 1;
    ModelSession session(model, options);
    SequenceRunner runner(session.backend(), session.kv());
    std::vector<float> logits;
    size_t position = 0;
    size_t step_index = 0;
    const size_t per_row = static_cast<size_t>(model->config().hc_mult * model->config().hidden_size);
    while (position < tokens.size()) {
      const size_t size = step_index < steps.size() ? static_cast<size_t>(steps[step_index++]) : 1;
      const ForwardOutput& out = runner.run(std::span<const int32_t>(tokens.data() + position, size),
                                            static_cast<int64_t>(size), mtp_logits != nullptr);
      logits.insert(logits.end(), out.logits.begin(), out.logits.end());
      if (mtp_logits != nullptr) {
        const size_t rows = std::min(size, tokens.size() - 1 - position);
        if (rows > 0) {
          const std::vector<float> hidden(out.hidden.begin(), out.hidden.begin() + static_cast<long>(rows * per_row));
          const ForwardOutput& mtp = runner.run_mtp(std::span<const int32_t>(tokens.data() + position + 1, rows), hidden,
                                                    static_cast<int64_t>(rows));
          mtp_logits->insert(mtp_logits->end(), mtp.logits.begin(), mtp.logits.end());
        }
      }
      runner.commit();
      position += size;
    }
    return logits;
  }

  static std::vector<int32_t> prefix(size_t n) { return {tokens_.begin(), tokens_.begin() + static_cast<long>(n)}; }

  static std::shared_ptr<const LoadedModel> tiny_;
  static std::shared_ptr<const LoadedModel> probe_;
  static std::vector<int32_t> tokens_;
};

std::shared_ptr<const LoadedModel> CudaBackendTest::tiny_;
std::shared_ptr<const LoadedModel> CudaBackendTest::probe_;
std::vector<int32_t> CudaBackendTest::tokens_;

void report(const char* what, const Comparison& c) {
  std::printf("%s: max relative error %.3g, top-1 agreement %.4f, first position above 1e-3: %lld\n", what,
              c.max_relative, c.top1_agreement, static_cast<long long>(c.first_mismatch));
}

TEST_F(CudaBackendTest, ProbeModelMatchesCpu) {
  const std::vector<int32_t> tokens = prefix(520);
  const int64_t vocab = probe_->config().vocab_size;
  for (const KvCacheOptions kv : {KvCacheOptions{}, KvCacheOptions{KvDtype::kBF16, IndexerKeyDtype::kBF16},
                                  KvCacheOptions{KvDtype::kFP8, IndexerKeyDtype::kFP4}}) {
    const std::vector<float> cpu = run(probe_, "cpu", tokens, {520}, kv);
    const std::vector<float> gpu = run(probe_, "cuda", tokens, {520}, kv);
    const Comparison c = compare(gpu, cpu, vocab);
    report((std::string("probe prefill 520, kv ") + to_string(kv.kv_dtype) + "/" + to_string(kv.indexer_dtype)).c_str(), c);
    EXPECT_LE(c.max_relative, 1e-2);
    EXPECT_GE(c.top1_agreement, 0.98);
  }
}

TEST_F(CudaBackendTest, TinyReleaseFormatModelMatchesCpu) {
  const std::vector<int32_t> tokens = prefix(300);
  const int64_t vocab = tiny_->config().vocab_size;
  const std::vector<float> cpu = run(tiny_, "cpu", tokens, {300});
  const std::vector<float> gpu = run(tiny_, "cuda", tokens, {300});
  const Comparison c = compare(gpu, cpu, vocab);
  report("tiny fp8/fp4 prefill 300", c);
  EXPECT_GE(c.top1_agreement, 0.8);
  // Before the first discrete divergence the two agree to fp32 rounding.
  const int64_t agreed = c.first_mismatch < 0 ? 300 : c.first_mismatch;
  EXPECT_GE(agreed, 4);
}

TEST_F(CudaBackendTest, DecodeChunkedAndBatchedEqualPrefill) {
  const int64_t vocab = tiny_->config().vocab_size;
  for (const KvCacheOptions kv : {KvCacheOptions{}, KvCacheOptions{KvDtype::kFP8, IndexerKeyDtype::kFP4}}) {
    const std::vector<int32_t> tokens = prefix(300);
    const std::vector<float> whole = run(tiny_, "cuda", tokens, {300}, kv);
    const std::vector<float> decoded = run(tiny_, "cuda", tokens, {1}, kv);
    const std::vector<float> chunked = run(tiny_, "cuda", tokens, {37, 219, 1, 43}, kv);
    const std::vector<float> mixed = run(tiny_, "cuda", tokens, {130}, kv);
    report("cuda decode vs prefill", compare(decoded, whole, vocab));
    report("cuda chunked vs prefill", compare(chunked, whole, vocab));
    EXPECT_EQ(decoded, whole) << to_string(kv.kv_dtype);
    EXPECT_EQ(chunked, whole) << to_string(kv.kv_dtype);
    EXPECT_EQ(mixed, whole) << to_string(kv.kv_dtype);
  }
  // A batch of two sequences equals each alone, bit for bit.
  const std::vector<int32_t> a(tokens_.begin(), tokens_.begin() + 70);
  const std::vector<int32_t> b(tokens_.begin() + 100, tokens_.begin() + 300);
  const std::vector<float> alone_a = run(tiny_, "cuda", a, {70});
  const std::vector<float> alone_b = run(tiny_, "cuda", b, {200});
  SessionOptions options;
  options.device = "cuda";
  options.max_tokens = 200;
  options.max_sequences = 2;
  ModelSession session(tiny_, options);
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
  ASSERT_EQ(out.rows, 270);
  EXPECT_TRUE(std::equal(alone_b.begin(), alone_b.end(), out.logits.begin()));
  EXPECT_TRUE(std::equal(alone_a.begin(), alone_a.end(), out.logits.begin() + 200 * vocab));
  // Decode steps of both sequences in one batch, against the CPU.
  kv.commit(id_a, a);
  kv.commit(id_b, b);
  ASSERT_TRUE(kv.reserve(id_a, 71));
  ASSERT_TRUE(kv.reserve(id_b, 201));
  const std::vector<int32_t> next_a = {tokens_[70]}, next_b = {tokens_[300]};
  ForwardBatch step;
  step.chunks.push_back({next_a, 70, &kv.tables(id_a), 1});
  step.chunks.push_back({next_b, 200, &kv.tables(id_b), 1});
  session.backend().forward(step, &out);
  std::vector<int32_t> full_a = a, full_b = b;
  full_a.push_back(tokens_[70]);
  full_b.push_back(tokens_[300]);
  const std::vector<float> ref_a = run(tiny_, "cuda", full_a, {71});
  const std::vector<float> ref_b = run(tiny_, "cuda", full_b, {201});
  EXPECT_TRUE(std::equal(ref_a.end() - vocab, ref_a.end(), out.logits.begin()));
  EXPECT_TRUE(std::equal(ref_b.end() - vocab, ref_b.end(), out.logits.begin() + vocab));
}

TEST_F(CudaBackendTest, MtpMatchesCpu) {
  const std::vector<int32_t> tokens = prefix(140);
  const int64_t vocab = probe_->config().vocab_size;
  std::vector<float> cpu_mtp, gpu_mtp, gpu_mtp_decode;
  run(probe_, "cpu", tokens, {140}, {}, &cpu_mtp);
  run(probe_, "cuda", tokens, {140}, {}, &gpu_mtp);
  run(probe_, "cuda", tokens, {33}, {}, &gpu_mtp_decode);
  const Comparison c = compare(gpu_mtp, cpu_mtp, vocab);
  report("probe MTP prefill 140", c);
  EXPECT_LE(c.max_relative, 1e-2);
  EXPECT_GE(c.top1_agreement, 0.98);
  EXPECT_EQ(gpu_mtp_decode, gpu_mtp);
}

TEST_F(CudaBackendTest, BadInputIsAnError) {
  SessionOptions options;
  options.device = "cuda";
  ModelSession session(tiny_, options);
  const std::vector<int32_t> bad = {1, 99999};
  ForwardBatch batch;
  const BlockTables tables;
  batch.chunks.push_back({bad, 0, &tables, 1});
  ForwardOutput out;
  EXPECT_THROW(session.backend().forward(batch, &out), Error);
}

}  // namespace
}  // namespace longctx

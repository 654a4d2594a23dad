// The engine end to end on the tiny test model (CPU backend).
#include "longctx/engine.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <thread>

#include "kv/kv_layout.h"
#include "model/model_weights.h"
#include "model/test_model.h"
#include "support/test_model_dir.h"
#include "text/tokenizer.h"

namespace longctx {
namespace {

using namespace std::chrono_literals;

struct Completion {
  std::vector<std::vector<int32_t>> tokens;  // per sequence
  std::vector<std::string> text;
  std::vector<std::vector<TokenLogprob>> logprobs;
  std::vector<FinishReason> finish;
  std::vector<std::string> stop_reason;
  Usage usage;
  std::string error;
  int final_events = 0;
};

Completion collect(RequestHandle& handle, int64_t n = 1) {
  Completion c;
  c.tokens.resize(static_cast<size_t>(n));
  c.text.resize(static_cast<size_t>(n));
  c.logprobs.resize(static_cast<size_t>(n));
  c.finish.resize(static_cast<size_t>(n), FinishReason::kError);
  c.stop_reason.resize(static_cast<size_t>(n));
  RequestEvent event;
  while (handle.next(&event, 60s)) {
    for (const SequenceDelta& d : event.deltas) {
      const size_t i = static_cast<size_t>(d.index);
      c.tokens[i].insert(c.tokens[i].end(), d.tokens.begin(), d.tokens.end());
      c.text[i] += d.text;
      c.logprobs[i].insert(c.logprobs[i].end(), d.logprobs.begin(), d.logprobs.end());
      if (d.finish) {
        c.finish[i] = *d.finish;
        c.stop_reason[i] = d.stop_reason;
      }
    }
    if (event.final) {
      ++c.final_events;
      c.usage = event.usage;
      c.error = event.error;
    }
  }
  return c;
}

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = testing::tiny_model_dir();
    text::write_test_tokenizer(dir_, 1024);
    model_ = std::make_shared<const LoadedModel>(dir_);
    tokenizer_ = text::Tokenizer::load(dir_);
  }
  static void TearDownTestSuite() {
    model_.reset();
    tokenizer_.reset();
  }

  static std::unique_ptr<Engine> engine(EngineOptions options = {}) {
    if (options.kv_cache_memory_gib == 1.0) options.kv_cache_memory_gib = 0.25;
    return Engine::create(model_, tokenizer_, options);
  }

  static std::vector<int32_t> prompt(size_t n, uint32_t seed) {
    std::mt19937 random(seed);
    std::uniform_int_distribution<int32_t> pick(2, 1000);
    std::vector<int32_t> tokens(n);
    for (auto& t : tokens) t = pick(random);
    return tokens;
  }

  static Completion run_alone(Engine& e, GenerationRequest request) {
    auto handle = e.submit(std::move(request));
    return collect(*handle);
  }

  static std::string dir_;
  static std::shared_ptr<const LoadedModel> model_;
  static std::shared_ptr<const text::Tokenizer> tokenizer_;
};

std::string EngineTest::dir_;
std::shared_ptr<const LoadedModel> EngineTest::model_;
std::shared_ptr<const text::Tokenizer> EngineTest::tokenizer_;

// 16 requests of mixed lengths, greedy: each one's tokens must not depend on the others.
std::vector<GenerationRequest> mixed_batch() {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 16; ++i) {
    GenerationRequest r;
    r.prompt = std::vector<int32_t>();
    std::mt19937 random(static_cast<uint32_t>(100 + i));
    std::uniform_int_distribution<int32_t> pick(2, 1000);
    const size_t length = static_cast<size_t>(3 + (i * 37) % 300);
    for (size_t k = 0; k < length; ++k) r.prompt.push_back(pick(random));
    r.sampling.temperature = 0;
    r.sampling.max_tokens = 6 + i % 5;
    r.sampling.ignore_eos = true;
    r.sampling.logprobs = 3;
    requests.push_back(std::move(r));
  }
  return requests;
}

TEST_F(EngineTest, EachRequestAloneEqualsInsideABatchOfSixteen) {
  const std::vector<GenerationRequest> requests = mixed_batch();
  std::vector<Completion> alone;
  {
    auto e = engine();
    for (const auto& r : requests) alone.push_back(run_alone(*e, r));
  }
  for (const bool chunked : {true, false}) {
    for (const bool invariant : {false, true}) {
      EngineOptions options;
      options.enable_chunked_prefill = chunked;
      options.max_num_batched_tokens = chunked ? 64 : 512;  // chunked: prompts split across steps
      options.batch_invariant = invariant;
      auto e = engine(options);
      std::vector<std::shared_ptr<RequestHandle>> handles;
      for (const auto& r : requests) handles.push_back(e->submit(r));
      for (size_t i = 0; i < requests.size(); ++i) {
        const Completion batched = collect(*handles[i]);
        EXPECT_EQ(batched.tokens, alone[i].tokens) << "request " << i << " chunked " << chunked << " invariant " << invariant;
        ASSERT_EQ(batched.logprobs[0].size(), alone[i].logprobs[0].size());
        for (size_t t = 0; t < batched.logprobs[0].size(); ++t) {
          // The CPU backend computes each row identically: logprobs are bit-identical.
          EXPECT_EQ(batched.logprobs[0][t].logprob, alone[i].logprobs[0][t].logprob);
          EXPECT_EQ(batched.logprobs[0][t].top, alone[i].logprobs[0][t].top);
        }
        EXPECT_EQ(batched.final_events, 1);
      }
      EXPECT_EQ(e->kv_pages_in_use(), 0);
    }
  }
}

TEST_F(EngineTest, PreemptionCompletesEveryRequestWithTheSameOutput) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r;
    r.prompt = prompt(200 + static_cast<size_t>(i) * 20, static_cast<uint32_t>(i));
    r.sampling.temperature = 0.8;
    r.sampling.seed = 1000 + static_cast<uint64_t>(i);
    r.sampling.max_tokens = 80;  // crosses into a second 256-position block
    r.sampling.ignore_eos = true;
    requests.push_back(r);
  }
  auto run = [&](double gib, EngineMetrics* metrics) {
    EngineOptions options;
    options.kv_cache_memory_gib = gib;
    options.enable_prefix_caching = false;
    options.max_model_len = 512;
    options.max_num_seqs = 6;
    auto e = engine(options);
    std::vector<std::shared_ptr<RequestHandle>> handles;
    for (const auto& r : requests) handles.push_back(e->submit(r));
    std::vector<std::vector<int32_t>> out;
    for (auto& h : handles) {
      const Completion c = collect(*h);
      EXPECT_EQ(c.finish[0], FinishReason::kLength) << c.error << " (kv " << gib << " GiB)";
      out.push_back(c.tokens[0]);
    }
    *metrics = e->metrics();
    EXPECT_EQ(e->kv_pages_in_use(), 0);
    return out;
  };
  EngineMetrics big_metrics, small_metrics;
  const auto big = run(0.25, &big_metrics);
  // Room for 5 blocks of each compressed pool: 6 requests growing to 2 blocks each.
  const KvLayout layout = make_kv_layout(model_->config(), {});
  size_t block_bytes = 0;
  for (size_t pool = 0; pool < layout.compressed_ratios.size(); ++pool) block_bytes += layout.compressed_page_bytes_all_layers(pool);
  const size_t window_pages = 2 * 6 + 2048 / 256 + 2;  // as pool_sizes_for_memory sizes them
  const double small_gib = static_cast<double>(window_pages * layout.window_page_bytes_all_layers() + 5 * block_bytes + 100) /
                           (1024.0 * 1024.0 * 1024.0);
  const auto small = run(small_gib, &small_metrics);
  EXPECT_EQ(small, big);
  EXPECT_EQ(big_metrics.requests_preempted_total, 0);
  EXPECT_GT(small_metrics.requests_preempted_total, 0);
}

TEST_F(EngineTest, SeedsAreReproducibleAndNGivesDistinctSequences) {
  auto e = engine();
  GenerationRequest r;
  r.prompt = prompt(40, 9);
  r.sampling.temperature = 1.0;
  r.sampling.seed = 7;
  r.sampling.max_tokens = 12;
  r.sampling.ignore_eos = true;
  const Completion a = run_alone(*e, r);
  const Completion b = run_alone(*e, r);
  EXPECT_EQ(a.tokens, b.tokens);
  r.sampling.seed = 8;
  EXPECT_NE(run_alone(*e, r).tokens, a.tokens);
  r.sampling.seed = 7;
  r.sampling.n = 3;
  auto handle = e->submit(r);
  const Completion three = collect(*handle, 3);
  EXPECT_EQ(three.tokens[0], a.tokens[0]);  // sequence 0 of n is the n = 1 sequence
  EXPECT_NE(three.tokens[1], three.tokens[0]);
  EXPECT_EQ(three.usage.completion_tokens, 36);
  EXPECT_EQ(three.usage.prompt_tokens, 40);
}

TEST_F(EngineTest, StopStringsSpanningTokensNeverLeak) {
  auto e = engine();
  GenerationRequest r;
  r.prompt = prompt(30, 11);
  r.sampling.temperature = 0;
  r.sampling.max_tokens = 40;
  r.sampling.ignore_eos = true;
  const Completion free_run = run_alone(*e, r);
  const std::string& text = free_run.text[0];
  ASSERT_GE(text.size(), 12u) << "the test tokenizer should produce some text";
  // A stop string made of the end of one token's text and the start of the next ones.
  const std::string stop = text.substr(5, 6);
  r.sampling.stop = {stop};
  const Completion stopped = run_alone(*e, r);
  EXPECT_EQ(stopped.finish[0], FinishReason::kStop);
  EXPECT_EQ(stopped.stop_reason[0], stop);
  EXPECT_EQ(stopped.text[0], text.substr(0, text.find(stop)));
  EXPECT_EQ(stopped.text[0].find(stop), std::string::npos);
}

TEST_F(EngineTest, StopTokensEndTheSequenceWithoutTheirText) {
  auto e = engine();
  GenerationRequest r;
  r.prompt = prompt(25, 12);
  r.sampling.temperature = 0;
  r.sampling.max_tokens = 20;
  r.sampling.ignore_eos = true;
  const Completion free_run = run_alone(*e, r);
  const int32_t stop_token = free_run.tokens[0][4];
  r.sampling.stop_token_ids = {stop_token};
  const Completion stopped = run_alone(*e, r);
  EXPECT_EQ(stopped.finish[0], FinishReason::kStop);
  const auto first = std::find(free_run.tokens[0].begin(), free_run.tokens[0].end(), stop_token);
  EXPECT_EQ(stopped.tokens[0].size(), static_cast<size_t>(first - free_run.tokens[0].begin()) + 1);
  EXPECT_EQ(stopped.stop_reason[0], std::to_string(stop_token));
}

TEST_F(EngineTest, AbortMidPrefillAndMidDecodeLeaksNoPages) {
  EngineOptions options;
  options.max_num_batched_tokens = 16;  // a 600-token prompt takes many steps
  auto e = engine(options);
  GenerationRequest long_prompt;
  long_prompt.prompt = prompt(600, 3);
  long_prompt.sampling.max_tokens = 5;
  auto prefilling = e->submit(long_prompt);
  GenerationRequest decode;
  decode.prompt = prompt(10, 4);
  decode.sampling.max_tokens = 1000;
  decode.sampling.ignore_eos = true;
  auto decoding = e->submit(decode);
  RequestEvent event;
  ASSERT_TRUE(decoding->next(&event, 60s));  // decoding has produced a token
  prefilling->abort();
  e->abort(decoding->id());
  const Completion a = collect(*prefilling);
  const Completion b = collect(*decoding);
  EXPECT_EQ(a.finish[0], FinishReason::kAbort);
  EXPECT_EQ(a.final_events, 1);
  EXPECT_EQ(b.finish[0], FinishReason::kAbort);
  EXPECT_EQ(b.final_events, 1);
  // The engine thread publishes its page count after the step that retired them.
  for (int i = 0; i < 100 && e->kv_pages_in_use() != 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(e->kv_pages_in_use(), 0);
  EXPECT_EQ(e->metrics().requests_finished_total["abort"], 2);
}

TEST_F(EngineTest, InvalidRequestsAndAFullQueueAreRefused) {
  EngineOptions options;
  options.max_num_seqs = 2;
  options.max_waiting_requests = 2;
  options.max_model_len = 256;
  auto e = engine(options);
  GenerationRequest bad;
  bad.prompt = {1, 2, 3};
  bad.sampling.temperature = -0.5;
  EXPECT_THROW(e->submit(bad), Error);
  bad.sampling.temperature = 1;
  bad.sampling.max_tokens = 300;
  EXPECT_THROW(e->submit(bad), Error);
  bad.sampling.max_tokens = 4;
  bad.prompt = {5000};
  EXPECT_THROW(e->submit(bad), Error);
  bad.prompt = {};
  EXPECT_THROW(e->submit(bad), Error);
  // Fill the queue faster than the engine drains it.
  e->shutdown(false);
  auto stopped = engine(options);
  GenerationRequest ok;
  ok.prompt = prompt(200, 5);
  ok.sampling.max_tokens = 50;
  std::vector<std::shared_ptr<RequestHandle>> handles;
  bool refused = false;
  for (int i = 0; i < 20 && !refused; ++i) {
    try {
      handles.push_back(stopped->submit(ok));
    } catch (const QueueFullError&) {
      refused = true;
    }
  }
  EXPECT_TRUE(refused);
  // Refused exactly when 2 running + 2 waiting were unfinished (none can finish that fast).
  EXPECT_EQ(handles.size(), 4u);
  for (auto& h : handles) EXPECT_EQ(collect(*h).final_events, 1);
  // Duplicate ids are refused while the first is live.
  GenerationRequest named = ok;
  named.id = "same";
  auto first = stopped->submit(named);
  EXPECT_THROW(stopped->submit(named), Error);
  collect(*first);
}

TEST_F(EngineTest, PrefixCacheReportsCachedTokens) {
  auto e = engine();
  GenerationRequest r;
  r.prompt = prompt(700, 13);
  r.sampling.max_tokens = 2;
  r.sampling.temperature = 0;
  const Completion first = run_alone(*e, r);
  EXPECT_EQ(first.usage.cached_tokens, 0);
  const Completion second = run_alone(*e, r);
  EXPECT_EQ(second.usage.cached_tokens, 512);
  EXPECT_EQ(second.tokens, first.tokens);
  const EngineMetrics m = e->metrics();
  EXPECT_EQ(m.prefix_cache_hits, 512);
  EXPECT_GT(m.prompt_tokens_total, 1399);
  EXPECT_EQ(m.time_to_first_token_seconds.count, 2u);
}

}  // namespace
}  // namespace longctx

namespace longctx {
namespace {

TEST_F(EngineTest, MtpSpeculativeDecodingGivesTheSameOutputAsPlainDecoding) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r;
    r.prompt = prompt(20 + static_cast<size_t>(i) * 50, static_cast<uint32_t>(40 + i));
    r.sampling.temperature = i % 2 == 0 ? 0.0 : 0.9;
    r.sampling.seed = 77 + static_cast<uint64_t>(i);
    r.sampling.max_tokens = 30;
    r.sampling.ignore_eos = true;
    r.sampling.logprobs = 1;
    requests.push_back(r);
  }
  auto run = [&](int64_t speculative, EngineMetrics* metrics) {
    EngineOptions options;
    options.num_speculative_tokens = speculative;
    options.max_num_batched_tokens = 96;  // chunked prefill too
    auto e = engine(options);
    std::vector<std::shared_ptr<RequestHandle>> handles;
    for (const auto& r : requests) handles.push_back(e->submit(r));
    std::vector<Completion> out;
    for (auto& h : handles) out.push_back(collect(*h));
    *metrics = e->metrics();
    EXPECT_EQ(e->kv_pages_in_use(), 0);
    return out;
  };
  EngineMetrics plain_metrics, spec_metrics;
  const std::vector<Completion> plain = run(0, &plain_metrics);
  const std::vector<Completion> spec = run(1, &spec_metrics);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(spec[i].tokens, plain[i].tokens) << i;
    ASSERT_EQ(spec[i].logprobs[0].size(), plain[i].logprobs[0].size());
    for (size_t t = 0; t < spec[i].logprobs[0].size(); ++t) {
      EXPECT_EQ(spec[i].logprobs[0][t].logprob, plain[i].logprobs[0][t].logprob) << i << " " << t;
    }
  }
  EXPECT_EQ(plain_metrics.spec_decode_draft_tokens_total, 0);
  EXPECT_GT(spec_metrics.spec_decode_draft_tokens_total, 100);
  std::printf("MTP drafts verified %lld, accepted %lld (random weights)\n",
              static_cast<long long>(spec_metrics.spec_decode_draft_tokens_total),
              static_cast<long long>(spec_metrics.spec_decode_accepted_tokens_total));
  // Drafts that stand: a head that can only say token 0 or token 7 makes the MTP block (which
  // shares the head) agree with the model often, so the accepting path runs too.
  const std::string peaked = testing::test_model_dir("peaked", test_model_preset("tiny"), 0);
  testing::rewrite_tensor(peaked, "head.weight", [](std::vector<uint8_t>& bytes, const TensorInfo& info) {
    const size_t row_bytes = bytes.size() / static_cast<size_t>(info.shape[0]);
    for (size_t row = 0; row < static_cast<size_t>(info.shape[0]); ++row) {
      if (row != 7) std::fill_n(bytes.begin() + static_cast<long>(row * row_bytes), row_bytes, 0);
    }
  });
  auto peaked_model = std::make_shared<const LoadedModel>(peaked);
  auto run_peaked = [&](int64_t speculative, EngineMetrics* metrics) {
    EngineOptions options;
    options.num_speculative_tokens = speculative;
    options.kv_cache_memory_gib = 0.25;
    auto e = Engine::create(peaked_model, nullptr, options);
    std::vector<std::shared_ptr<RequestHandle>> handles;
    for (auto r : requests) {
      r.sampling.temperature = 0;
      handles.push_back(e->submit(r));
    }
    std::vector<std::vector<int32_t>> out;
    for (auto& h : handles) out.push_back(collect(*h).tokens[0]);
    *metrics = e->metrics();
    EXPECT_EQ(e->kv_pages_in_use(), 0);
    return out;
  };
  EngineMetrics peaked_plain, peaked_spec;
  EXPECT_EQ(run_peaked(1, &peaked_spec), run_peaked(0, &peaked_plain));
  EXPECT_GT(peaked_spec.spec_decode_accepted_tokens_total, 10);
  EXPECT_LT(peaked_spec.spec_decode_draft_tokens_total, 6 * 30);  // accepted drafts save steps
  std::printf("peaked head: MTP drafts verified %lld, accepted %lld\n",
              static_cast<long long>(peaked_spec.spec_decode_draft_tokens_total),
              static_cast<long long>(peaked_spec.spec_decode_accepted_tokens_total));
  // Configurations that cannot work are refused up front.
  EngineOptions two;
  two.num_speculative_tokens = 2;
  EXPECT_THROW(engine(two), Error);
}

}  // namespace
}  // namespace longctx

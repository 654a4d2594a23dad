// The parts of `longctx bench serve` that need no server: the SSE reader, the statistics,
// arrivals, prompts and flag parsing. bench_serve.test.mjs drives the whole command.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "bench_serve_dataset.h"
#include "bench_serve_metrics.h"
#include "bench_serve_options.h"
#include "bench_serve_runner.h"
#include "bench_serve_sse.h"
#include "longctx/error.h"

namespace longctx::cli {
namespace {

std::vector<std::string> read_events(const std::vector<std::string>& pieces, bool finish = false) {
  SseDataReader reader;
  std::vector<std::string> events;
  const auto collect = [&](std::string_view data) {
    events.emplace_back(data);
    return true;
  };
  for (const std::string& piece : pieces)
    reader.feed(piece, collect);
  if (finish) reader.finish(collect);
  return events;
}

TEST(BenchServeSse, EventsSplitAnywhereComeOutWhole) {
  const std::string stream =
      "data: {\"a\":1}\n\n: keep-alive\n\nevent: x\r\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n";
  const std::vector<std::string> expected = {"{\"a\":1}", "{\"b\":2}", "[DONE]"};
  EXPECT_EQ(read_events({stream}), expected);
  for (size_t cut = 0; cut <= stream.size(); ++cut)
    EXPECT_EQ(read_events({stream.substr(0, cut), stream.substr(cut)}), expected) << cut;
  std::vector<std::string> bytes;
  for (char c : stream)
    bytes.emplace_back(1, c);
  EXPECT_EQ(read_events(bytes), expected);
}

TEST(BenchServeSse, DataLinesOfOneEventJoinAndAnUnendedLastEventCountsAtTheEnd) {
  EXPECT_EQ(read_events({"data: one\ndata:two\n\n"}), std::vector<std::string>{"one\ntwo"});
  EXPECT_TRUE(read_events({"data: [DONE]\n"}).empty());
  EXPECT_EQ(read_events({"data: [DONE]\n"}, /*finish=*/true), std::vector<std::string>{"[DONE]"});
  EXPECT_EQ(read_events({"data: [DONE]"}, /*finish=*/true), std::vector<std::string>{"[DONE]"});
}

TEST(BenchServeSse, StopsWhenTold) {
  SseDataReader reader;
  int seen = 0;
  EXPECT_FALSE(reader.feed("data: 1\n\ndata: 2\n\n", [&](std::string_view) { return ++seen < 1; }));
  EXPECT_EQ(seen, 1);
}

TEST(BenchServeMetrics, PercentilesInterpolateLikeNumpy) {
  const std::vector<double> values = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(percentile_of_sorted(values, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile_of_sorted(values, 99), 3.97);
  EXPECT_DOUBLE_EQ(percentile_of_sorted(values, 100), 4);
  EXPECT_DOUBLE_EQ(percentile_of_sorted({7}, 99), 7);
  EXPECT_DOUBLE_EQ(percentile_of_sorted({}, 50), 0);
}

RequestRecord completed(double start, double ttft, double e2el, int64_t tokens) {
  RequestRecord record;
  record.success = true;
  record.start_s = start;
  record.ttft_s = ttft;
  record.e2el_s = e2el;
  record.output_tokens = tokens;
  record.input_tokens = 10;
  record.output_chunks = tokens;
  for (int64_t i = 1; i < tokens; ++i)
    record.itl_s.push_back((e2el - ttft) / static_cast<double>(tokens - 1));
  return record;
}

TEST(BenchServeMetrics, SummaryCountsOnlyCompletedRequests) {
  BenchServeOptions options;
  options.metric_percentiles = {50, 99};
  BenchRun run;
  run.records = {completed(0, 0.1, 1.1, 11), completed(0.5, 0.2, 0.2, 1), RequestRecord()};
  run.records[2].error = "HTTP 429: busy";
  run.records[2].http_status = 429;
  run.duration_s = 2;
  const BenchSummary summary = summarize(run, options);
  EXPECT_EQ(summary.completed, 2);
  EXPECT_EQ(summary.failed, 1);
  ASSERT_EQ(summary.errors.size(), 1u);
  EXPECT_EQ(summary.errors[0].message, "HTTP 429: busy");
  EXPECT_EQ(summary.total_input_tokens, 20);
  EXPECT_EQ(summary.total_output_tokens, 12);
  EXPECT_DOUBLE_EQ(summary.request_throughput, 1);
  EXPECT_DOUBLE_EQ(summary.output_throughput, 6);
  EXPECT_DOUBLE_EQ(summary.total_token_throughput, 16);
  EXPECT_EQ(summary.peak_concurrency, 2);
  ASSERT_EQ(summary.latencies.size(), 4u);
  EXPECT_EQ(summary.latencies[0].metric, "ttft");
  EXPECT_NEAR(summary.latencies[0].mean_ms, 150, 1e-9);
  EXPECT_EQ(summary.latencies[1].metric, "tpot");  // a one-token request has none
  EXPECT_EQ(summary.latencies[1].count, 1u);
  EXPECT_NEAR(summary.latencies[1].mean_ms, 100, 1e-9);
  EXPECT_EQ(summary.latencies[2].count, 10u);  // itl: every gap of every request
  EXPECT_NEAR(summary.latencies[3].median_ms, 650, 1e-9);
  ASSERT_EQ(summary.latencies[3].percentiles_ms.size(), 2u);
  EXPECT_EQ(summary.latencies[3].percentiles_ms[1].first, 99);
}

TEST(BenchServeMetrics, BackToBackRequestsDoNotOverlap) {
  EXPECT_EQ(
      peak_overlap({completed(0, 0.1, 1, 2), completed(1, 0.1, 1, 2), completed(2, 0.1, 1, 2)}), 1);
  EXPECT_EQ(
      peak_overlap({completed(0, 0.1, 3, 2), completed(1, 0.1, 1, 2), completed(1.5, 0.1, 1, 2)}),
      3);
}

TEST(BenchServeRunner, ArrivalsAreAtOnceWithoutARateAndAveragedByIt) {
  BenchServeOptions options;
  options.num_prompts = 5;
  EXPECT_EQ(arrival_times(options), std::vector<double>(5, 0.0));
  options.num_prompts = 20000;
  options.request_rate = 50;
  for (double burstiness : {1.0, 0.25}) {
    options.burstiness = burstiness;
    const std::vector<double> times = arrival_times(options);
    EXPECT_EQ(times.front(), 0);
    EXPECT_TRUE(std::is_sorted(times.begin(), times.end()));
    // The mean gap is 1 / rate whatever the burstiness (a fixed seed: no chance involved).
    EXPECT_NEAR(times.back() / static_cast<double>(times.size() - 1), 0.02, 0.002) << burstiness;
    EXPECT_EQ(arrival_times(options), times);
  }
}

BenchServeOptions parse(std::vector<std::string> argv) {
  return *parse_bench_serve_options(argv);
}

TEST(BenchServeDataset, CompletionPromptsHaveExactLengthsAndShareThePrefix) {
  BenchServeOptions options =
      parse({"--random-input-len", "20", "--random-output-len", "5", "--random-prefix-len", "7"});
  const BenchPromptSet prompts(options, nullptr);
  const BenchPrompt first = prompts.prompt(0);
  const BenchPrompt second = prompts.prompt(1);
  ASSERT_EQ(first.token_ids.size(), 27u);
  EXPECT_EQ(first.input_len, 27);
  EXPECT_EQ(first.output_len, 5);
  EXPECT_TRUE(
      std::equal(first.token_ids.begin(), first.token_ids.begin() + 7, second.token_ids.begin()));
  EXPECT_NE(first.token_ids, second.token_ids);
  EXPECT_EQ(prompts.prompt(1).token_ids, second.token_ids);  // a function of (seed, index)
  for (int32_t id : first.token_ids) {
    EXPECT_GE(id, 100);
    EXPECT_LT(id, 1000);
  }
  const BenchPrompt probe = prompts.probe(2);
  EXPECT_FALSE(std::equal(probe.token_ids.begin(), probe.token_ids.end(), first.token_ids.begin()));
}

TEST(BenchServeDataset, RangeRatioVariesLengthsWithinTheRange) {
  const BenchServeOptions options = parse({"--random-input-len", "100", "--random-output-len", "10",
                                           "--random-range-ratio", "0.5", "--vocab-size", "50"});
  const BenchPromptSet prompts(options, nullptr);
  std::set<int64_t> inputs;
  for (int64_t i = 0; i < 50; ++i) {
    const BenchPrompt prompt = prompts.prompt(i);
    EXPECT_GE(prompt.input_len, 50);
    EXPECT_LE(prompt.input_len, 150);
    EXPECT_GE(prompt.output_len, 5);
    EXPECT_LE(prompt.output_len, 15);
    for (int32_t id : prompt.token_ids) {
      EXPECT_GE(id, 25);
      EXPECT_LT(id, 50);
    }
    inputs.insert(prompt.input_len);
  }
  EXPECT_GT(inputs.size(), 10u);
}

TEST(BenchServeDataset, ChatPromptsAreWords) {
  const BenchServeOptions options =
      parse({"--endpoint", "/v1/chat/completions", "--random-input-len", "12"});
  const BenchPrompt prompt = BenchPromptSet(options, nullptr).prompt(3);
  EXPECT_TRUE(prompt.token_ids.empty());
  EXPECT_EQ(prompt.input_len, 12);
  EXPECT_EQ(std::count(prompt.text.begin(), prompt.text.end(), ' '), 11);
}

TEST(BenchServeOptions, UrlsEndpointsAndBackends) {
  BenchServeOptions options = parse({"--base-url", "http://h:9/v1/", "--backend", "openai-chat"});
  EXPECT_EQ(options.server.scheme_host_port, "http://h:9");
  EXPECT_EQ(options.server.path_prefix, "");  // the /v1 of an OpenAI base URL is not doubled
  EXPECT_EQ(options.endpoint, "/v1/chat/completions");
  EXPECT_EQ(options.api, ServeApi::kChatCompletions);
  options = parse({"--url", "https://proxy/llm", "--endpoint", "/v1/completions"});
  EXPECT_EQ(options.server.scheme_host_port, "https://proxy");
  EXPECT_EQ(options.server.path_prefix, "/llm");
  EXPECT_EQ(options.backend, "openai");
  options = parse({"--host", "10.0.0.2", "--port", "8080", "--request-rate", "inf"});
  EXPECT_EQ(options.server.scheme_host_port, "http://10.0.0.2:8080");
  EXPECT_EQ(options.request_rate, 0);
  options = parse({"--result-filename", "x.json", "--max-concurrency", "3"});
  EXPECT_TRUE(options.save_result);
  EXPECT_EQ(options.max_concurrency, 3);
}

TEST(BenchServeOptions, BadFlagsAreErrorsNamingThem) {
  const std::vector<std::vector<std::string>> bad = {
      {"--url", "localhost:8000"},
      {"--base-url", "http://x", "--port", "1"},
      {"--request-rate", "0"},
      {"--burstiness", "-1"},
      {"--max-concurrency", "0"},
      {"--metric-percentiles", "0"},
      {"--metric-percentiles", "101"},
      {"--extra-body", "[1]"},
      {"--tokenizer", "d", "--vocab-size", "10"},
      {"--dataset-name", "sharegpt"},
      {"--timeout", "0"},
      {"stray"},
  };
  for (const auto& argv : bad)
    EXPECT_THROW(parse_bench_serve_options(argv), Error) << argv[0];
}

}  // namespace
}  // namespace longctx::cli

// The figures of `longctx bench serve`, computed from the per-request records the way
// `vllm bench serve` computes them: throughputs over the whole run, and mean / median / std /
// percentiles of TTFT, TPOT, ITL and E2EL over the requests that completed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bench_serve_client.h"
#include "bench_serve_options.h"
#include "bench_serve_runner.h"

namespace longctx::cli {

struct LatencyStats {
  std::string metric;  // "ttft", "tpot", "itl" or "e2el"
  size_t count = 0;    // samples
  double mean_ms = 0, median_ms = 0, std_ms = 0;
  std::vector<std::pair<double, double>> percentiles_ms;  // (percentile, value)
};

struct ErrorCount {
  std::string message;
  int64_t count = 0;
};

struct BenchSummary {
  int64_t completed = 0;
  int64_t failed = 0;
  double duration_s = 0;
  int64_t total_input_tokens = 0;  // of completed requests
  int64_t total_output_tokens = 0;
  double request_throughput = 0;  // completed requests per second
  double output_throughput = 0;   // output tokens per second
  double total_token_throughput = 0;
  int64_t peak_concurrency = 0;         // most requests in flight at one moment
  std::vector<LatencyStats> latencies;  // in --percentile-metrics order
  std::vector<ErrorCount> errors;       // distinct messages, first seen first
};

// Time per output token after the first; none for a request with fewer than two tokens.
std::optional<double> tpot_seconds(const RequestRecord& record);

// The value below which `percentile` percent of `sorted` lies, interpolated linearly between
// neighbours (numpy's default); 0 for no values.
double percentile_of_sorted(const std::vector<double>& sorted, double percentile);

// Most intervals [start, start + e2el] that overlap at one moment.
int64_t peak_overlap(const std::vector<RequestRecord>& records);

BenchSummary summarize(const BenchRun& run, const BenchServeOptions& options);

}  // namespace longctx::cli

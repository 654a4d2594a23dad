#include "bench_serve_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace longctx::cli {
namespace {

LatencyStats stats_of(const std::string& metric, std::vector<double> seconds,
                      const std::vector<double>& percentiles) {
  LatencyStats stats;
  stats.metric = metric;
  stats.count = seconds.size();
  std::vector<double> ms(seconds.size());
  std::transform(seconds.begin(), seconds.end(), ms.begin(), [](double s) { return s * 1000.0; });
  std::sort(ms.begin(), ms.end());
  if (!ms.empty()) {
    const double n = static_cast<double>(ms.size());
    stats.mean_ms = std::accumulate(ms.begin(), ms.end(), 0.0) / n;
    double squares = 0;
    for (double value : ms)
      squares += (value - stats.mean_ms) * (value - stats.mean_ms);
    stats.std_ms = std::sqrt(squares / n);  // population std, as numpy's default
  }
  stats.median_ms = percentile_of_sorted(ms, 50.0);
  for (double p : percentiles)
    stats.percentiles_ms.emplace_back(p, percentile_of_sorted(ms, p));
  return stats;
}

}  // namespace

std::optional<double> tpot_seconds(const RequestRecord& record) {
  if (!record.success || record.output_tokens < 2) return std::nullopt;
  return (record.e2el_s - record.ttft_s) / static_cast<double>(record.output_tokens - 1);
}

double percentile_of_sorted(const std::vector<double>& sorted, double percentile) {
  if (sorted.empty()) return 0;
  const double rank = percentile / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  const double fraction = rank - static_cast<double>(below);
  return sorted[below] + (sorted[above] - sorted[below]) * fraction;
}

int64_t peak_overlap(const std::vector<RequestRecord>& records) {
  // +1 at each start, -1 at each end; at equal times ends go first, so back-to-back requests
  // on one connection do not count as overlapping.
  std::vector<std::pair<double, int>> events;
  events.reserve(records.size() * 2);
  for (const RequestRecord& record : records) {
    if (record.e2el_s <= 0) continue;  // never sent
    events.emplace_back(record.start_s, +1);
    events.emplace_back(record.start_s + record.e2el_s, -1);
  }
  std::sort(events.begin(), events.end());
  int64_t now = 0;
  int64_t peak = 0;
  for (const auto& [time, change] : events) {
    now += change;
    peak = std::max(peak, now);
  }
  return peak;
}

BenchSummary summarize(const BenchRun& run, const BenchServeOptions& options) {
  BenchSummary summary;
  summary.duration_s = run.duration_s;
  std::vector<double> ttft, tpot, itl, e2el;
  for (const RequestRecord& record : run.records) {
    if (!record.success) {
      ++summary.failed;
      const auto same =
          std::find_if(summary.errors.begin(), summary.errors.end(),
                       [&](const ErrorCount& e) { return e.message == record.error; });
      if (same == summary.errors.end())
        summary.errors.push_back({record.error, 1});
      else
        ++same->count;
      continue;
    }
    ++summary.completed;
    summary.total_input_tokens += record.input_tokens;
    summary.total_output_tokens += record.output_tokens;
    ttft.push_back(record.ttft_s);
    e2el.push_back(record.e2el_s);
    itl.insert(itl.end(), record.itl_s.begin(), record.itl_s.end());
    if (const auto seconds = tpot_seconds(record)) tpot.push_back(*seconds);
  }
  if (summary.duration_s > 0) {
    summary.request_throughput = static_cast<double>(summary.completed) / summary.duration_s;
    summary.output_throughput =
        static_cast<double>(summary.total_output_tokens) / summary.duration_s;
    summary.total_token_throughput =
        static_cast<double>(summary.total_input_tokens + summary.total_output_tokens) /
        summary.duration_s;
  }
  summary.peak_concurrency = peak_overlap(run.records);
  for (const std::string& metric : options.percentile_metrics) {
    const std::vector<double>& samples = metric == "ttft"   ? ttft
                                         : metric == "tpot" ? tpot
                                         : metric == "itl"  ? itl
                                                            : e2el;
    summary.latencies.push_back(stats_of(metric, samples, options.metric_percentiles));
  }
  return summary;
}

}  // namespace longctx::cli

// /metrics rendering: Prometheus text format with the names dashboards expect.
#include <gtest/gtest.h>

#include <sstream>

#include "engine/metrics.h"
#include "server/prometheus_metrics.h"

namespace longctx::server {
namespace {

TEST(ServerMetricsTest, ExpositionHasTheNamesTypesAndHistogramParts) {
  EngineMetrics metrics;
  metrics.requests_running = 3;
  metrics.requests_waiting = 2;
  metrics.kv_cache_usage = 0.25;
  metrics.prompt_tokens_total = 1234;
  metrics.requests_finished_total["length"] = 7;
  metrics.time_to_first_token_seconds = make_histogram({0.1, 1.0});
  observe(metrics.time_to_first_token_seconds, 0.05);
  observe(metrics.time_to_first_token_seconds, 0.5);
  observe(metrics.time_to_first_token_seconds, 5.0);
  ServerCounters counters;
  counters.refused_queue_full = 4;
  const std::string text = render_prometheus(metrics, counters, "my \"model\"");

  for (const char* line : {
           "# TYPE longctx:num_requests_running gauge",
           "longctx:num_requests_running{model_name=\"my \\\"model\\\"\"} 3",
           "longctx:num_requests_waiting{model_name=\"my \\\"model\\\"\"} 2",
           "longctx:kv_cache_usage_perc{model_name=\"my \\\"model\\\"\"} 0.25",
           "# TYPE longctx:prompt_tokens_total counter",
           "longctx:prompt_tokens_total{model_name=\"my \\\"model\\\"\"} 1234",
           "longctx:request_success_total{model_name=\"my "
           "\\\"model\\\"\",finished_reason=\"length\"} 7",
           "longctx:request_refused_total{model_name=\"my \\\"model\\\"\",reason=\"queue_full\"} 4",
           "# TYPE longctx:time_to_first_token_seconds histogram",
           "longctx:time_to_first_token_seconds_bucket{model_name=\"my \\\"model\\\"\",le=\"0.1\"} "
           "1",
           "longctx:time_to_first_token_seconds_bucket{model_name=\"my \\\"model\\\"\",le=\"1\"} 2",
           "longctx:time_to_first_token_seconds_bucket{model_name=\"my "
           "\\\"model\\\"\",le=\"+Inf\"} 3",
           "longctx:time_to_first_token_seconds_sum{model_name=\"my \\\"model\\\"\"} 5.55",
           "longctx:time_to_first_token_seconds_count{model_name=\"my \\\"model\\\"\"} 3",
       }) {
    EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << text;
  }
  for (const char* name : {"longctx:prefix_cache_queries_total", "longctx:prefix_cache_hits_total",
                           "longctx:generation_tokens_total", "longctx:num_preemptions_total",
                           "longctx:time_per_output_token_seconds_bucket",
                           "longctx:e2e_request_latency_seconds_count"}) {
    EXPECT_NE(text.find(name), std::string::npos) << name;
  }
  // Every line is a comment or "name{labels} value".
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("# ", 0) == 0) continue;
    EXPECT_EQ(line.rfind("longctx:", 0), 0u) << line;
    EXPECT_NE(line.find("} "), std::string::npos) << line;
  }
}

}  // namespace
}  // namespace longctx::server

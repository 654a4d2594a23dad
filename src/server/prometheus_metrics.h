// GET /metrics: the engine's counters, gauges and latency histograms (and the server's own
// refusal counters) in Prometheus' text exposition format 0.0.4, under vLLM-style names
// (longctx:num_requests_running, longctx:time_to_first_token_seconds_bucket, ...), each
// labelled with the served model's name.
#pragma once

#include <cstdint>
#include <string>

#include "longctx/engine.h"

namespace longctx::server {

// What the HTTP layer counts itself.
struct ServerCounters {
  int64_t refused_queue_full = 0;     // 429: the engine's waiting queue was full
  int64_t refused_shutting_down = 0;  // 503: the server was stopping
  int64_t client_disconnects = 0;     // streams aborted because the client went away
};

inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string render_prometheus(const EngineMetrics& metrics, const ServerCounters& counters,
                              const std::string& model_name);

}  // namespace longctx::server

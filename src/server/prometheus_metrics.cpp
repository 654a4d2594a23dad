#include "server/prometheus_metrics.h"

#include <charconv>
#include <cmath>

namespace longctx::server {
namespace {

// Shortest text that reads back as the same double; "+Inf" as Prometheus spells infinity.
std::string number_text(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  // Counts print as integers ("100000", not "1e+05").
  if (value == std::floor(value) && std::fabs(value) < 9.0e15) {
    return std::to_string(static_cast<int64_t>(value));
  }
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

// Label values escape backslash, double quote and newline.
std::string escape_label(const std::string& value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out.push_back(c);
  }
  return out;
}

class Exposition {
 public:
  explicit Exposition(const std::string& model_name)
      : model_label_(str_cat("model_name=\"", escape_label(model_name), "\"")) {}

  void header(const std::string& name, const char* type, const char* help) {
    text_ += str_cat("# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  void sample(const std::string& name, double value, const std::string& extra_labels = "") {
    text_ += str_cat(name, "{", model_label_, extra_labels.empty() ? "" : ",", extra_labels, "} ",
                     number_text(value), "\n");
  }
  void gauge(const std::string& name, double value, const char* help) {
    header(name, "gauge", help);
    sample(name, value);
  }
  void counter(const std::string& name, double value, const char* help) {
    header(name, "counter", help);
    sample(name, value);
  }
  void histogram(const std::string& name, const Histogram& histogram, const char* help) {
    header(name, "histogram", help);
    for (size_t i = 0; i < histogram.bounds.size(); ++i) {
      sample(name + "_bucket", static_cast<double>(histogram.counts[i]),
             str_cat("le=\"", number_text(histogram.bounds[i]), "\""));
    }
    // The +Inf bucket must exist and equal the count, even if the engine's bounds lack it.
    if (histogram.bounds.empty() || !std::isinf(histogram.bounds.back())) {
      sample(name + "_bucket", static_cast<double>(histogram.count), "le=\"+Inf\"");
    }
    sample(name + "_sum", histogram.sum);
    sample(name + "_count", static_cast<double>(histogram.count));
  }
  std::string take() { return std::move(text_); }

 private:
  std::string model_label_;
  std::string text_;
};

}  // namespace

std::string render_prometheus(const EngineMetrics& m, const ServerCounters& counters,
                              const std::string& model_name) {
  Exposition out(model_name);
  out.gauge("longctx:num_requests_running", static_cast<double>(m.requests_running),
            "Requests in the running batch.");
  out.gauge("longctx:num_requests_waiting", static_cast<double>(m.requests_waiting),
            "Requests waiting to be scheduled.");
  out.gauge("longctx:kv_cache_usage_perc", m.kv_cache_usage,
            "Fraction of KV cache pages held by live sequences (1 = full).");
  out.counter("longctx:prefix_cache_queries_total", static_cast<double>(m.prefix_cache_queries),
              "Prompt tokens looked up in the prefix cache.");
  out.counter("longctx:prefix_cache_hits_total", static_cast<double>(m.prefix_cache_hits),
              "Prompt tokens served from the prefix cache.");
  out.counter("longctx:prompt_tokens_total", static_cast<double>(m.prompt_tokens_total),
              "Prompt tokens admitted.");
  out.counter("longctx:generation_tokens_total", static_cast<double>(m.generation_tokens_total),
              "Tokens generated.");
  out.counter("longctx:spec_decode_num_draft_tokens_total",
              static_cast<double>(m.spec_decode_draft_tokens_total),
              "MTP draft tokens verified by the target model.");
  out.counter("longctx:spec_decode_num_accepted_tokens_total",
              static_cast<double>(m.spec_decode_accepted_tokens_total),
              "MTP draft tokens the target model sampled too (kept).");
  out.counter("longctx:num_preemptions_total", static_cast<double>(m.requests_preempted_total),
              "Sequences preempted for lack of KV cache (recomputed later).");
  out.header("longctx:request_success_total", "counter", "Finished requests by finish reason.");
  for (const char* reason : {"stop", "length", "abort", "error"}) {
    const auto it = m.requests_finished_total.find(reason);
    out.sample("longctx:request_success_total",
               it == m.requests_finished_total.end() ? 0.0 : static_cast<double>(it->second),
               str_cat("finished_reason=\"", reason, "\""));
  }
  out.header("longctx:request_refused_total", "counter",
             "Requests refused before reaching the engine.");
  out.sample("longctx:request_refused_total", static_cast<double>(counters.refused_queue_full),
             "reason=\"queue_full\"");
  out.sample("longctx:request_refused_total", static_cast<double>(counters.refused_shutting_down),
             "reason=\"shutting_down\"");
  out.counter("longctx:client_disconnects_total", static_cast<double>(counters.client_disconnects),
              "Streaming requests aborted because the client disconnected.");
  out.histogram("longctx:time_to_first_token_seconds", m.time_to_first_token_seconds,
                "Time from arrival to the first generated token.");
  out.histogram("longctx:time_per_output_token_seconds", m.time_per_output_token_seconds,
                "Mean time between output tokens, per request.");
  out.histogram("longctx:e2e_request_latency_seconds", m.e2e_request_latency_seconds,
                "Time from arrival to the final event.");
  out.histogram("longctx:request_queue_time_seconds", m.queue_time_seconds,
                "Time from arrival to the first scheduled step.");
  return out.take();
}

}  // namespace longctx::server

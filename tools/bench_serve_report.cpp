#include "bench_serve_report.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "longctx/error.h"

namespace longctx::cli {
namespace {

using Json = nlohmann::ordered_json;

constexpr int kTableWidth = 50;
constexpr size_t kErrorsShown = 5;

// "99" for 99, "99.9" for 99.9: the name a percentile has in labels and JSON keys.
std::string percentile_name(double percentile) {
  if (percentile == std::floor(percentile)) return std::to_string(static_cast<int64_t>(percentile));
  return str_cat(percentile);
}

std::string upper(const std::string& text) {
  std::string out = text;
  for (char& c : out)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

const char* metric_title(const std::string& metric) {
  if (metric == "ttft") return "Time to First Token";
  if (metric == "tpot") return "Time per Output Token (excl. 1st token)";
  if (metric == "itl") return "Inter-token Latency";
  return "End-to-end Latency";
}

// "-----Title-----" centred in the table's width.
void print_rule(std::FILE* out, const std::string& title, char fill) {
  const int padding = std::max(0, kTableWidth - static_cast<int>(title.size()));
  const int left = padding / 2;
  std::fprintf(out, "%s%s%s\n", std::string(static_cast<size_t>(left), fill).c_str(), title.c_str(),
               std::string(static_cast<size_t>(padding - left), fill).c_str());
}

void print_row(std::FILE* out, const std::string& label, const std::string& value) {
  std::fprintf(out, "%-40s %s\n", (label + ":").c_str(), value.c_str());
}

std::string fixed(double value, int digits = 2) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, value);
  return text;
}

Json request_rate_json(const BenchServeOptions& options) {
  return options.request_rate > 0 ? Json(options.request_rate) : Json("inf");
}

}  // namespace

void print_bench_summary(std::FILE* out, const BenchSummary& summary,
                         const BenchServeOptions& options) {
  print_rule(out, " Serving Benchmark Result ", '=');
  print_row(out, "Successful requests", std::to_string(summary.completed));
  print_row(out, "Failed requests", std::to_string(summary.failed));
  if (options.max_concurrency)
    print_row(out, "Maximum request concurrency", std::to_string(*options.max_concurrency));
  print_row(out, "Max concurrency achieved", std::to_string(summary.peak_concurrency));
  print_row(out, "Benchmark duration (s)", fixed(summary.duration_s));
  print_row(out, "Total input tokens", std::to_string(summary.total_input_tokens));
  print_row(out, "Total generated tokens", std::to_string(summary.total_output_tokens));
  print_row(out, "Request throughput (req/s)", fixed(summary.request_throughput));
  print_row(out, "Output token throughput (tok/s)", fixed(summary.output_throughput));
  print_row(out, "Total token throughput (tok/s)", fixed(summary.total_token_throughput));
  for (const LatencyStats& stats : summary.latencies) {
    const std::string name = upper(stats.metric);
    print_rule(out, metric_title(stats.metric), '-');
    print_row(out, "Mean " + name + " (ms)", fixed(stats.mean_ms));
    print_row(out, "Median " + name + " (ms)", fixed(stats.median_ms));
    for (const auto& [percentile, value] : stats.percentiles_ms) {
      if (percentile == 50) continue;  // the median, just printed
      print_row(out, "P" + percentile_name(percentile) + " " + name + " (ms)", fixed(value));
    }
  }
  print_rule(out, "", '=');
  if (!summary.errors.empty()) {
    std::fprintf(out, "Failures (%zu distinct reason%s):\n", summary.errors.size(),
                 summary.errors.size() == 1 ? "" : "s");
    for (size_t i = 0; i < std::min(kErrorsShown, summary.errors.size()); ++i) {
      std::fprintf(out, "  %lld x %s\n", static_cast<long long>(summary.errors[i].count),
                   summary.errors[i].message.c_str());
    }
    if (summary.errors.size() > kErrorsShown)
      std::fprintf(out, "  ... and %zu more (see --save-result)\n",
                   summary.errors.size() - kErrorsShown);
  }
  std::fflush(out);
}

std::string bench_result_path(const BenchServeOptions& options, const BenchContext& context) {
  std::string name = options.result_filename;
  if (name.empty()) {
    const std::string rate = options.request_rate > 0 ? str_cat(options.request_rate) : "inf";
    const std::string concurrency =
        options.max_concurrency ? str_cat("-concurrency", *options.max_concurrency) : "";
    std::string model = std::filesystem::path(context.model).filename().string();
    if (model.empty()) model = "model";
    name = str_cat(options.backend, "-", rate, "qps", concurrency, "-", model, "-",
                   context.started_at, ".json");
  }
  if (options.result_dir.empty()) return name;
  return (std::filesystem::path(options.result_dir) / name).string();
}

void save_bench_result(const std::string& path, const BenchRun& run, const BenchSummary& summary,
                       const BenchServeOptions& options, const BenchContext& context) {
  Json result;
  result["date"] = context.started_at;
  result["backend"] = options.backend;
  result["base_url"] = options.server.scheme_host_port + options.server.path_prefix;
  result["endpoint"] = options.endpoint;
  result["model_id"] = context.model;
  result["dataset_name"] = options.dataset_name;
  result["num_prompts"] = options.num_prompts;
  result["random_input_len"] = options.input_len;
  result["random_output_len"] = options.output_len;
  result["random_range_ratio"] = options.range_ratio;
  result["random_prefix_len"] = options.prefix_len;
  result["ignore_eos"] = options.ignore_eos;
  result["temperature"] = options.temperature;
  result["seed"] = options.seed;
  result["request_rate"] = request_rate_json(options);
  result["burstiness"] = options.burstiness;
  result["max_concurrency"] = options.max_concurrency ? Json(*options.max_concurrency) : Json();
  result["client_threads"] = run.client_threads;

  result["duration"] = summary.duration_s;
  result["completed"] = summary.completed;
  result["failed"] = summary.failed;
  result["total_input_tokens"] = summary.total_input_tokens;
  result["total_output_tokens"] = summary.total_output_tokens;
  result["request_throughput"] = summary.request_throughput;
  result["output_throughput"] = summary.output_throughput;
  result["total_token_throughput"] = summary.total_token_throughput;
  result["max_concurrency_achieved"] = summary.peak_concurrency;
  for (const LatencyStats& stats : summary.latencies) {
    result["mean_" + stats.metric + "_ms"] = stats.mean_ms;
    result["median_" + stats.metric + "_ms"] = stats.median_ms;
    result["std_" + stats.metric + "_ms"] = stats.std_ms;
    for (const auto& [percentile, value] : stats.percentiles_ms)
      result["p" + percentile_name(percentile) + "_" + stats.metric + "_ms"] = value;
  }
  Json errors = Json::array();
  for (const ErrorCount& error : summary.errors)
    errors.push_back({{"message", error.message}, {"count", error.count}});
  result["errors"] = std::move(errors);

  Json requests = Json::array();
  for (size_t i = 0; i < run.records.size(); ++i) {
    const RequestRecord& record = run.records[i];
    Json entry;
    entry["index"] = i;
    entry["success"] = record.success;
    entry["http_status"] = record.http_status;
    entry["error"] = record.error;
    entry["start_s"] = record.start_s;
    entry["input_tokens"] = record.input_tokens;
    entry["output_tokens"] = record.output_tokens;
    entry["output_chunks"] = record.output_chunks;
    entry["usage_reported"] = record.usage_reported;
    entry["ttft_ms"] = record.ttft_s * 1000.0;
    const auto tpot = tpot_seconds(record);
    entry["tpot_ms"] = tpot ? Json(*tpot * 1000.0) : Json();
    entry["e2el_ms"] = record.e2el_s * 1000.0;
    Json itl = Json::array();
    for (double gap : record.itl_s)
      itl.push_back(gap * 1000.0);
    entry["itl_ms"] = std::move(itl);
    requests.push_back(std::move(entry));
  }
  result["requests"] = std::move(requests);

  std::ofstream file(path);
  if (!file) fail("cannot write the result to '", path, "'");
  file << result.dump(2) << '\n';
  file.close();
  if (!file) fail("writing the result to '", path, "' failed");
}

}  // namespace longctx::cli

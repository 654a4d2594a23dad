// The settings of `longctx bench serve`, read from its flags. The flag names follow
// `vllm bench serve` where a flag means the same thing, so that a command line moves between
// the two tools unchanged.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace longctx::cli {

// Which OpenAI API the benchmark speaks; it decides the request body and where tokens are read
// from in the stream.
enum class ServeApi { kCompletions, kChatCompletions };

struct ServerAddress {
  std::string scheme_host_port;  // "http://127.0.0.1:8000", what httplib::Client takes
  std::string path_prefix;       // "" or a proxy's prefix such as "/llm" (no trailing slash)
};

struct BenchServeOptions {
  // Where and how to talk.
  ServerAddress server;
  std::string endpoint = "/v1/completions";  // path under the server, without path_prefix
  ServeApi api = ServeApi::kCompletions;
  std::string backend;  // as given or inferred: "openai" (= "vllm") or "openai-chat"
  std::string model;    // empty: the first id of GET /v1/models
  std::string api_key;  // empty: no Authorization header
  double timeout_seconds = 3600.0;

  // What to send.
  std::string dataset_name = "random";  // "random" or "fixed"
  std::optional<std::string> tokenizer_dir;
  std::optional<int64_t> vocab_size;
  int64_t num_prompts = 1000;
  int64_t input_len = 1024;
  int64_t output_len = 128;
  double range_ratio = 0.0;  // lengths are uniform in [len * (1 - r), len * (1 + r)]
  int64_t prefix_len = 0;    // tokens shared by every prompt, before its own input_len
  bool ignore_eos = false;
  double temperature = 0.0;
  std::string extra_body_json;  // merged into every request body
  uint64_t seed = 0;

  // How fast to send.
  double request_rate = 0.0;  // requests per second; 0 means all at once (vllm's "inf")
  double burstiness = 1.0;    // gamma shape of the arrival gaps: 1 is Poisson
  std::optional<int64_t> max_concurrency;

  // What to report.
  std::vector<std::string> percentile_metrics = {"ttft", "tpot", "itl", "e2el"};
  std::vector<double> metric_percentiles = {99.0};
  bool save_result = false;
  std::string result_dir;       // empty: the working folder
  std::string result_filename;  // empty: named after backend, rate, concurrency, model, time
};

// Parses the arguments after `longctx bench serve`; nullopt when --help was asked (the help
// text is printed). Throws longctx::Error naming the flag on bad input.
std::optional<BenchServeOptions> parse_bench_serve_options(const std::vector<std::string>& argv);

// "http://host:port/prefix" -> its parts; throws on anything but http(s) URLs.
ServerAddress parse_server_url(const std::string& url);

}  // namespace longctx::cli

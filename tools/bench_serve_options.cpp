#include "bench_serve_options.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include <nlohmann/json.hpp>

#include "args.h"
#include "longctx/error.h"

namespace longctx::cli {
namespace {

constexpr const char* kHelp = R"(usage: longctx bench serve [options]

Drives a running OpenAI-compatible server (longctx serve, vllm serve, ...) with streamed
requests and prints request throughput, token throughput and TTFT / TPOT / ITL / E2EL
statistics, as `vllm bench serve` does. Flags mean what they mean there.

Server
  --base-url URL            server root, e.g. http://127.0.0.1:8000 (also --url; a trailing
                            /v1 is accepted). Default http://HOST:PORT
  --host H, --port P        when no URL is given (default 127.0.0.1, 8000)
  --endpoint PATH           /v1/completions (default) or /v1/chat/completions
  --backend NAME            openai | vllm (completions) or openai-chat (chat completions);
                            default: inferred from --endpoint
  --model NAME              the "model" of each request (default: the first of GET /v1/models)
  --api-key KEY             sent as "Authorization: Bearer KEY" (default $OPENAI_API_KEY)
  --timeout S               seconds one request may take before it counts as failed
                            (default 3600)

Prompts
  --dataset-name random|fixed   random: lengths vary by --random-range-ratio around the
                            given ones; fixed: every prompt and output has exactly them
  --num-prompts N           requests to send (default 1000)
  --random-input-len N      prompt tokens after the shared prefix (default 1024)
  --random-output-len N     max_tokens of each request (default 128)
  --random-range-ratio R    lengths uniform in [len*(1-R), len*(1+R)], 0 <= R < 1 (default 0)
  --random-prefix-len N     tokens shared by every prompt, first (exercises prefix caching)
  --tokenizer DIR           tokenizer.json folder: completions prompts use its ordinary
                            (non-special) ids, chat prompts are sized with it
  --vocab-size V            without --tokenizer: completions prompts use ids in
                            [min(100, V/2), V)
                            With neither, ids come from [100, 1000): ordinary tokens in
                            common BPE vocabularies, valid for any model of >= 1000 tokens.
                            Completions prompts are token-id arrays, so their length is exact
                            on any server; chat prompts are random English words, and the
                            server's usage.prompt_tokens is what is counted.
  --ignore-eos              send "ignore_eos": true (outputs then have exactly max_tokens)
  --temperature T           sampling temperature (default 0)
  --extra-body JSON         object merged into every request body
  --seed S                  prompts, lengths and arrival times (default 0)

Load
  --request-rate R          requests per second, arrivals a gamma process (default inf: all
                            at once)
  --burstiness B            gamma shape of the arrival gaps: 1 = Poisson, < 1 burstier
  --max-concurrency N       at most N requests in flight (a request that arrives when N are
                            in flight waits for one to finish)

Report
  --percentile-metrics L    of ttft,tpot,itl,e2el (default all four)
  --metric-percentiles L    percentiles printed besides mean and median (default 99)
  --save-result             write every figure and per-request records as JSON
  --result-dir DIR          where (default the working folder)
  --result-filename FILE    its name (implies --save-result)
  --disable-tqdm            accepted for vllm compatibility (no progress bar is drawn)

TTFT: time to the first streamed chunk that carries output text. ITL: the gaps between
successive chunks that carry output (a chunk that brings several tokens counts once, as in
vllm). TPOT: (E2EL - TTFT) / (output tokens - 1). Output tokens come from the stream's usage
(stream_options.include_usage), else one per chunk. Refused (HTTP 429/503), timed-out and
broken requests count as failed, with their reason.
)";

// clang-format off
const std::set<std::string> kKnownFlags = {
    "help", "base-url", "url", "host", "port", "endpoint", "backend", "model", "api-key",
    "timeout", "dataset-name", "num-prompts", "random-input-len", "random-output-len",
    "random-range-ratio", "random-prefix-len", "tokenizer", "vocab-size", "ignore-eos",
    "temperature", "extra-body", "seed", "request-rate", "burstiness", "max-concurrency",
    "percentile-metrics", "metric-percentiles", "save-result", "result-dir", "result-filename",
    "disable-tqdm"};
// clang-format on

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(start, comma - start);
    const size_t first = item.find_first_not_of(" \t");
    const size_t last = item.find_last_not_of(" \t");
    if (first != std::string::npos) items.push_back(item.substr(first, last - first + 1));
    start = comma + 1;
  }
  return items;
}

int64_t positive_int(const Args& args, const std::string& flag, int64_t fallback) {
  const int64_t value = args.get_int(flag, fallback);
  if (value < 1) fail("--", flag, " must be at least 1, got ", value);
  return value;
}

ServeApi api_of_backend(const std::string& backend) {
  if (backend == "openai" || backend == "vllm") return ServeApi::kCompletions;
  if (backend == "openai-chat") return ServeApi::kChatCompletions;
  fail("--backend must be openai, vllm or openai-chat, got '", backend, "'");
}

ServeApi api_of_endpoint(const std::string& endpoint) {
  return ends_with(endpoint, "/chat/completions") ? ServeApi::kChatCompletions
                                                  : ServeApi::kCompletions;
}

void read_server(const Args& args, BenchServeOptions& options) {
  if (args.has("base-url") && args.has("url")) fail("give --base-url or --url, not both");
  const auto url = args.has("base-url") ? args.get("base-url") : args.get("url");
  if (url) {
    if (args.has("host") || args.has("port"))
      fail("--host/--port and --base-url name the server twice; give one");
    options.server = parse_server_url(*url);
  } else {
    const int64_t port = args.get_int("port", 8000);
    if (port < 1 || port > 65535) fail("--port must be in [1, 65535], got ", port);
    options.server =
        parse_server_url("http://" + args.get_or("host", "127.0.0.1") + ":" + std::to_string(port));
  }

  const auto backend = args.get("backend");
  const auto endpoint = args.get("endpoint");
  if (endpoint && (endpoint->empty() || endpoint->front() != '/'))
    fail("--endpoint must be a path starting with '/', got '", *endpoint, "'");
  if (backend) {
    options.api = api_of_backend(*backend);
    options.backend = *backend;
    if (endpoint && api_of_endpoint(*endpoint) != options.api) {
      fail("--backend ", *backend, " and --endpoint ", *endpoint,
           " disagree (openai-chat goes with /v1/chat/completions, openai and vllm with "
           "/v1/completions)");
    }
  } else {
    options.api = endpoint ? api_of_endpoint(*endpoint) : ServeApi::kCompletions;
    options.backend = options.api == ServeApi::kChatCompletions ? "openai-chat" : "openai";
  }
  options.endpoint = endpoint.value_or(
      options.api == ServeApi::kChatCompletions ? "/v1/chat/completions" : "/v1/completions");
  // An OpenAI-style base URL (".../v1") with a vllm-style endpoint ("/v1/...") would double
  // the /v1; both conventions are common, so the overlap is dropped.
  if (ends_with(options.server.path_prefix, "/v1") && options.endpoint.rfind("/v1/", 0) == 0)
    options.server.path_prefix.resize(options.server.path_prefix.size() - 3);

  options.model = args.get_or("model", "");
  const char* env_key = std::getenv("OPENAI_API_KEY");
  options.api_key = args.get_or("api-key", env_key ? env_key : "");
  options.timeout_seconds = args.get_double("timeout", options.timeout_seconds);
  if (!(options.timeout_seconds > 0)) fail("--timeout must be a positive number of seconds");
}

void read_prompts(const Args& args, BenchServeOptions& options) {
  options.dataset_name = args.get_or("dataset-name", options.dataset_name);
  if (options.dataset_name != "random" && options.dataset_name != "fixed")
    fail("--dataset-name must be random or fixed, got '", options.dataset_name, "'");
  options.num_prompts = positive_int(args, "num-prompts", options.num_prompts);
  options.input_len = positive_int(args, "random-input-len", options.input_len);
  options.output_len = positive_int(args, "random-output-len", options.output_len);
  options.range_ratio = args.get_double("random-range-ratio", options.range_ratio);
  if (!(options.range_ratio >= 0 && options.range_ratio < 1))
    fail("--random-range-ratio must be in [0, 1), got ", options.range_ratio);
  if (options.dataset_name == "fixed" && options.range_ratio != 0)
    fail("--dataset-name fixed sends exact lengths: --random-range-ratio must be 0");
  options.prefix_len = args.get_int("random-prefix-len", 0);
  if (options.prefix_len < 0) fail("--random-prefix-len must be >= 0");
  if (args.has("tokenizer") && args.has("vocab-size"))
    fail("give --tokenizer or --vocab-size, not both (the tokenizer knows its vocabulary)");
  options.tokenizer_dir = args.get("tokenizer");
  if (args.has("vocab-size")) {
    options.vocab_size = args.get_int("vocab-size", 0);
    if (*options.vocab_size < 2) fail("--vocab-size must be at least 2");
  }
  options.ignore_eos = args.has("ignore-eos");
  options.temperature = args.get_double("temperature", 0.0);
  if (!(options.temperature >= 0)) fail("--temperature must be >= 0");
  if (const auto extra = args.get("extra-body")) {
    const auto parsed = nlohmann::json::parse(*extra, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_object()) fail("--extra-body must be a JSON object, got '", *extra, "'");
    options.extra_body_json = *extra;
  }
  const int64_t seed = args.get_int("seed", 0);
  if (seed < 0) fail("--seed must be >= 0");
  options.seed = static_cast<uint64_t>(seed);
}

void read_load(const Args& args, BenchServeOptions& options) {
  const std::string rate = args.get_or("request-rate", "inf");
  if (rate != "inf" && rate != "Infinity") {
    options.request_rate = args.get_double("request-rate", 0);
    if (!(options.request_rate > 0) || std::isinf(options.request_rate))
      fail("--request-rate must be a positive number of requests per second or inf, got '", rate,
           "'");
  }
  options.burstiness = args.get_double("burstiness", 1.0);
  if (!(options.burstiness > 0)) fail("--burstiness must be > 0");
  if (args.has("max-concurrency"))
    options.max_concurrency = positive_int(args, "max-concurrency", 1);
}

void read_report(const Args& args, BenchServeOptions& options) {
  if (const auto metrics = args.get("percentile-metrics")) {
    options.percentile_metrics = split_list(*metrics);
    if (options.percentile_metrics.empty()) fail("--percentile-metrics names no metric");
    for (const std::string& metric : options.percentile_metrics) {
      if (metric != "ttft" && metric != "tpot" && metric != "itl" && metric != "e2el")
        fail("--percentile-metrics: unknown metric '", metric, "' (known: ttft, tpot, itl, e2el)");
    }
  }
  if (const auto percentiles = args.get("metric-percentiles")) {
    options.metric_percentiles.clear();
    for (const std::string& item : split_list(*percentiles)) {
      errno = 0;
      char* end = nullptr;
      const double value = std::strtod(item.c_str(), &end);
      if (*end != '\0' || errno != 0 || !(value > 0 && value <= 100))
        fail("--metric-percentiles: '", item, "' is not a percentile in (0, 100]");
      options.metric_percentiles.push_back(value);
    }
    if (options.metric_percentiles.empty()) fail("--metric-percentiles names no percentile");
  }
  options.result_dir = args.get_or("result-dir", "");
  options.result_filename = args.get_or("result-filename", "");
  options.save_result = args.has("save-result") || !options.result_filename.empty();
}

}  // namespace

ServerAddress parse_server_url(const std::string& url) {
  const size_t scheme_end = url.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https")
    fail("the server URL must start with http:// or https://, got '", url, "'");
  const size_t host_start = scheme_end + 3;
  const size_t path_start = std::min(url.find('/', host_start), url.size());
  if (path_start == host_start) fail("the server URL '", url, "' names no host");
  ServerAddress address;
  address.scheme_host_port = url.substr(0, path_start);
  address.path_prefix = url.substr(path_start);
  while (!address.path_prefix.empty() && address.path_prefix.back() == '/')
    address.path_prefix.pop_back();
  if (address.path_prefix.find_first_of("?#") != std::string::npos)
    fail("the server URL '", url, "' must not carry a query or fragment");
  return address;
}

std::optional<BenchServeOptions> parse_bench_serve_options(const std::vector<std::string>& argv) {
  const Args args(argv, {"help", "ignore-eos", "save-result", "disable-tqdm"});
  if (args.has("help") || (args.positional().size() == 1 && args.positional()[0] == "-h")) {
    std::fputs(kHelp, stdout);
    return std::nullopt;
  }
  args.check_known(kKnownFlags);
  if (!args.positional().empty())
    fail("unexpected argument '", args.positional()[0], "' (every option is a --flag)");
  BenchServeOptions options;
  read_server(args, options);
  read_prompts(args, options);
  read_load(args, options);
  read_report(args, options);
  return options;
}

}  // namespace longctx::cli

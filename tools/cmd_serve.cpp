// longctx serve MODEL_DIR: the OpenAI-compatible HTTP server. Flags follow `vllm serve` where a
// flag means the same thing.
#include <pthread.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "args.h"
#include "command.h"
#include "longctx/engine.h"
#include "longctx/error.h"
#include "model/model_weights.h"
#include "server/http_server.h"
#include "text/tokenizer.h"

namespace longctx::cli {
namespace {

constexpr const char* kHelp = R"(usage: longctx serve MODEL_DIR [options]

Serves MODEL_DIR over an OpenAI-compatible HTTP API: /v1/chat/completions, /v1/completions,
/v1/models, /health, /metrics, /tokenize, /detokenize. Flags mean what they mean for vllm serve.
  --host H                      address to listen on (default 127.0.0.1)
  --port P                      port (default 8000; 0 picks a free one, printed at startup)
  --served-model-name A[,B]     names clients use in "model" (default: MODEL_DIR as given)
  --api-key KEY                 require "Authorization: Bearer KEY" on /v1/* (or LONGCTX_API_KEY)
  --tokenizer DIR               tokenizer.json folder (default MODEL_DIR)
  --device cpu|cuda             backend (default cpu)
  --max-model-len N             longest prompt + completion, in tokens (default: what the KV
                                cache memory holds, at most max_position_embeddings; 32k works)
  --max-num-seqs N              sequences in the running batch (default 16)
  --max-num-batched-tokens N    tokens per engine step (default 2048)
  --max-waiting-requests N      requests queued beyond a full batch; more get 429 (default
                                256; 0: only what the running batch takes)
  --kv-cache-memory SIZE        memory for the KV cache: GiB, or with a unit (4GiB, 512MiB;
                                default 1 GiB). --gpu-memory-utilization has no meaning here.
  --kv-cache-dtype auto|fp32|bf16|fp8   (auto: fp32 on cpu, bf16 on cuda; fp8_e4m3 = fp8)
  --indexer-dtype auto|fp32|bf16|fp4
  --enable-prefix-caching / --no-enable-prefix-caching      (default on)
  --enable-chunked-prefill / --disable-chunked-prefill      (default on)
  --batch-invariant             results independent of batch composition
  --seed S                      seeds requests that bring none (default 0)
  --speculative-config JSON     MTP speculative decoding, as vllm: '{"method":"mtp",
                                "num_speculative_tokens":1}' (same output, fewer steps)
  --num-speculative-tokens N    shorthand for the above (0 off, 1 on)
  --max-body-mib N              larger request bodies get 413 (default 64)
  --http-threads N              connections served at once (default max-num-seqs +
                                max-waiting-requests + 16)
  --timeout-keep-alive S        idle keep-alive connections close after S seconds (default 5;
                                shutdown waits for them at most this long)
  --shutdown-timeout S          on SIGINT/SIGTERM, seconds in-flight requests may take to
                                finish before they are aborted (default 10; a second signal
                                aborts at once)
)";

// SIGINT / SIGTERM are blocked in every thread from the start of `serve` (threads inherit the
// mask, and some start while the model loads) and taken by the main thread with sigtimedwait,
// so a signal never interrupts a worker in the middle of a write.
sigset_t shutdown_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

// The signal that arrived within `timeout`, or 0.
int wait_for_signal(const sigset_t& signals, std::chrono::milliseconds timeout) {
  timespec wait{};
  wait.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  wait.tv_nsec = static_cast<long>((timeout.count() % 1000) * 1000000);
  const int signal = ::sigtimedwait(&signals, nullptr, &wait);
  return signal > 0 ? signal : 0;
}

// While weights load the signals stay pending; the progress callback looks for them, so that
// Ctrl-C still stops a long load.
void fail_if_interrupted() {
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  if (sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1) {
    fail("interrupted while loading the model");
  }
}

// Weight loading progress on stderr: a bar redrawn in place on a terminal, a line per tenth
// of the bytes otherwise (logs).
class LoadProgressBar {
 public:
  LoadProgressBar()
      : terminal_(::isatty(STDERR_FILENO) == 1), start_(std::chrono::steady_clock::now()) {}

  static void report(const LoadProgress& progress, void* self) {
    static_cast<LoadProgressBar*>(self)->draw(progress);
    fail_if_interrupted();
  }

  void draw(const LoadProgress& progress) {
    const double fraction = progress.bytes_total > 0 ? static_cast<double>(progress.bytes_done) /
                                                           static_cast<double>(progress.bytes_total)
                                                     : 1.0;
    const int tenth = static_cast<int>(fraction * 10.0);
    const bool done = progress.tensors_done == progress.tensors_total;
    if (!terminal_ && tenth == last_tenth_ && !done) return;
    last_tenth_ = tenth;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    const bool large = progress.bytes_total >= (size_t{1} << 30);
    const double unit = large ? 1024.0 * 1024.0 * 1024.0 : 1024.0 * 1024.0;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr,
                 "%sLoading weights [%.*s%*s] %3.0f%%  %zu/%zu tensors  %.2f/%.2f %s  %.1f s%s",
                 terminal_ ? "\r" : "", filled, "##############################", kWidth - filled,
                 "", fraction * 100.0, progress.tensors_done, progress.tensors_total,
                 static_cast<double>(progress.bytes_done) / unit,
                 static_cast<double>(progress.bytes_total) / unit, large ? "GiB" : "MiB", seconds,
                 terminal_ && !done ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  bool terminal_;
  std::chrono::steady_clock::time_point start_;
  int last_tenth_ = -1;
};

// "4", "4GiB", "4G", "512MiB", "512M" -> GiB.
double parse_memory_gib(const std::string& text) {
  size_t end = 0;
  double value = 0;
  try {
    value = std::stod(text, &end);
  } catch (const std::exception&) {
    fail("--kv-cache-memory must be a size such as 4, 4GiB or 512MiB, got '", text, "'");
  }
  std::string unit = text.substr(end);
  for (char& c : unit)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "g" || unit == "gib" || unit == "gb")
    scale = 1.0;
  else if (unit == "m" || unit == "mib" || unit == "mb")
    scale = 1.0 / 1024.0;
  else if (unit == "t" || unit == "tib" || unit == "tb")
    scale = 1024.0;
  if (scale == 0 || !(value > 0))
    fail("--kv-cache-memory must be a positive size such as 4, 4GiB or 512MiB, got '", text, "'");
  return value * scale;
}

// vLLM accepts 32k / 1M for lengths.
int64_t parse_token_count(const Args& args, const std::string& flag, int64_t fallback) {
  const auto text = args.get(flag);
  if (!text) return fallback;
  std::string digits = *text;
  int64_t scale = 1;
  if (!digits.empty() && (digits.back() == 'k' || digits.back() == 'K')) scale = 1000;
  if (!digits.empty() && (digits.back() == 'm' || digits.back() == 'M')) scale = 1000000;
  if (scale != 1) digits.pop_back();
  char* end = nullptr;
  const long long value = std::strtoll(digits.c_str(), &end, 10);
  if (digits.empty() || *end != '\0' || value <= 0)
    fail("--", flag, " must be a positive number of tokens, got '", *text, "'");
  return value * scale;
}

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) names.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  if (names.empty()) fail("--served-model-name needs at least one name");
  return names;
}

// vllm's --speculative-config: only the MTP method exists for V4 (its draft is the model's own
// next-n block); other keys vllm knows but that mean nothing here are refused, not ignored.
int64_t parse_speculative_config(const std::string& text) {
  const auto config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) fail("--speculative-config must be a JSON object, got '", text, "'");
  int64_t tokens = 1;
  for (const auto& [key, value] : config.items()) {
    if (key == "method" || key == "model") {
      if (!value.is_string() || (value != "mtp" && value != "deepseek_mtp"))
        fail("--speculative-config: only method \"mtp\" is supported, got ", value.dump());
    } else if (key == "num_speculative_tokens") {
      if (!value.is_number_integer())
        fail("--speculative-config: num_speculative_tokens must be an integer");
      tokens = value.get<int64_t>();
    } else {
      fail("--speculative-config: unknown key '", key, "' (known: method, num_speculative_tokens)");
    }
  }
  return tokens;
}

EngineOptions engine_options(const Args& args) {
  EngineOptions options;
  options.device = args.get_or("device", "cpu");
  if (options.device != "cpu" && options.device != "cuda")
    fail("--device must be cpu or cuda, got '", options.device, "'");
  options.kv_cache_dtype = args.get_or("kv-cache-dtype", "auto");
  if (options.kv_cache_dtype == "fp8_e4m3") options.kv_cache_dtype = "fp8";
  options.indexer_dtype = args.get_or("indexer-dtype", "auto");
  options.max_model_len = parse_token_count(args, "max-model-len", 0);
  options.max_num_seqs = args.get_int("max-num-seqs", options.max_num_seqs);
  options.max_num_batched_tokens =
      parse_token_count(args, "max-num-batched-tokens", options.max_num_batched_tokens);
  options.max_waiting_requests = args.get_int("max-waiting-requests", options.max_waiting_requests);
  if (options.max_num_seqs < 1) fail("--max-num-seqs must be at least 1");
  if (options.max_waiting_requests < 0) fail("--max-waiting-requests must be at least 0");
  if (const auto memory = args.get("kv-cache-memory"))
    options.kv_cache_memory_gib = parse_memory_gib(*memory);
  if (args.has("enable-prefix-caching") && args.has("no-enable-prefix-caching")) {
    fail("give --enable-prefix-caching or --no-enable-prefix-caching, not both");
  }
  options.enable_prefix_caching = !args.has("no-enable-prefix-caching");
  const bool chunked_off =
      args.has("disable-chunked-prefill") || args.has("no-enable-chunked-prefill");
  if (chunked_off && args.has("enable-chunked-prefill"))
    fail("chunked prefill cannot be both enabled and disabled");
  options.enable_chunked_prefill = !chunked_off;
  options.batch_invariant = args.has("batch-invariant");
  options.seed = static_cast<uint64_t>(args.get_int("seed", 0));
  if (args.has("speculative-config") && args.has("num-speculative-tokens"))
    fail("give --speculative-config or --num-speculative-tokens, not both");
  if (const auto config = args.get("speculative-config"))
    options.num_speculative_tokens = parse_speculative_config(*config);
  options.num_speculative_tokens =
      args.get_int("num-speculative-tokens", options.num_speculative_tokens);
  return options;
}

// clang-format off
const std::set<std::string> kKnownFlags = {
    "help", "model", "host", "port", "served-model-name", "api-key", "tokenizer", "device",
    "max-model-len", "max-num-seqs", "max-num-batched-tokens", "max-waiting-requests",
    "kv-cache-memory", "kv-cache-dtype", "indexer-dtype", "enable-prefix-caching",
    "no-enable-prefix-caching", "enable-chunked-prefill", "disable-chunked-prefill",
    "no-enable-chunked-prefill", "batch-invariant", "seed", "max-body-mib", "http-threads",
    "timeout-keep-alive", "shutdown-timeout", "speculative-config",
    "num-speculative-tokens"};
// clang-format on

int run(const std::vector<std::string>& argv) {
  const Args args(
      argv, {"help", "enable-prefix-caching", "no-enable-prefix-caching", "enable-chunked-prefill",
             "disable-chunked-prefill", "no-enable-chunked-prefill", "batch-invariant"});
  if (args.has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.has("gpu-memory-utilization")) {
    fail(
        "--gpu-memory-utilization has no meaning for longctx: give the KV cache budget with "
        "--kv-cache-memory "
        "(e.g. --kv-cache-memory 40GiB)");
  }
  args.check_known(kKnownFlags);
  if (args.positional().size() > 1)
    fail("expected one MODEL_DIR, got ", args.positional().size(), " arguments");
  const std::string dir = args.positional().empty() ? args.require("model") : args.positional()[0];
  if (!std::filesystem::is_directory(dir)) fail("MODEL_DIR '", dir, "' is not a folder");

  // A shell starts background jobs with SIGINT ignored; a server should still stop on it.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  const sigset_t signals = shutdown_signals();
  ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const EngineOptions engine_config = engine_options(args);
  server::ServerOptions options;
  options.host = args.get_or("host", "127.0.0.1");
  const int64_t port = args.get_int("port", 8000);
  if (port < 0 || port > 65535) fail("--port must be in [0, 65535], got ", port);
  options.port = static_cast<int>(port);
  options.served_model_names = split_names(args.get_or("served-model-name", dir));
  options.model_root = dir;
  const char* env_key = std::getenv("LONGCTX_API_KEY");
  options.api_key = args.get_or("api-key", env_key ? env_key : "");
  const int64_t body_mib = args.get_int("max-body-mib", 64);
  if (body_mib < 1) fail("--max-body-mib must be at least 1");
  options.max_body_bytes = static_cast<size_t>(body_mib) << 20;
  options.http_threads = static_cast<int>(args.get_int("http-threads", 0));
  if (options.http_threads < 0) fail("--http-threads must be >= 0");
  const int64_t keep_alive = args.get_int("timeout-keep-alive", 5);
  if (keep_alive < 1 || keep_alive > 3600)
    fail("--timeout-keep-alive must be in [1, 3600] seconds");
  options.keep_alive_timeout_seconds = static_cast<int>(keep_alive);
  const double shutdown_timeout = args.get_double("shutdown-timeout", 10.0);
  if (!(shutdown_timeout >= 0)) fail("--shutdown-timeout must be >= 0 seconds");

  const std::string tokenizer_dir = args.get_or("tokenizer", dir);
  std::shared_ptr<const text::Tokenizer> tokenizer;
  if (std::filesystem::exists(std::filesystem::path(tokenizer_dir) / "tokenizer.json")) {
    tokenizer = text::Tokenizer::load(tokenizer_dir);
  } else if (args.has("tokenizer")) {
    fail(tokenizer_dir, " has no tokenizer.json");
  } else {
    std::fprintf(
        stderr,
        "longctx serve: %s has no tokenizer.json: only /v1/completions with token ids will work\n",
        dir.c_str());
  }

  LoadProgressBar bar;
  auto model = std::make_shared<const LoadedModel>(dir, &LoadProgressBar::report, &bar);
  options.vocab_size = model->config().vocab_size;

  std::shared_ptr<Engine> engine = Engine::create(model, tokenizer, engine_config);
  server::OpenAiServer server(engine, tokenizer, options);
  server.start();
  std::printf(
      "longctx serve: listening on %s (model \"%s\", max_model_len %lld, OpenAI base URL %s/v1)\n",
      server.url().c_str(), options.served_model_names.front().c_str(),
      static_cast<long long>(engine->max_model_len()), server.url().c_str());
  std::fflush(stdout);

  int signal = 0;
  while (signal == 0)
    signal = wait_for_signal(signals, std::chrono::milliseconds(500));
  std::fprintf(stderr,
               "longctx serve: %s: no new requests; %lld in flight get up to %.0f s to finish\n",
               signal == SIGINT ? "SIGINT" : "SIGTERM",
               static_cast<long long>(server.inflight_requests()), shutdown_timeout);
  server.stop_accepting();
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(shutdown_timeout * 1000.0));
  while (server.inflight_requests() > 0 && std::chrono::steady_clock::now() < deadline) {
    if (wait_for_signal(signals, std::chrono::milliseconds(50)) != 0)
      break;  // a second signal: abort now
  }
  if (server.inflight_requests() > 0) {
    std::fprintf(stderr, "longctx serve: aborting %lld requests\n",
                 static_cast<long long>(server.inflight_requests()));
  }
  server.abort_inflight();
  server.wait();
  engine->shutdown(/*drain=*/false);
  std::fprintf(stderr, "longctx serve: stopped\n");
  return 0;
}

const CommandRegistration kRegistration("serve", "serve a model over an OpenAI-compatible HTTP API",
                                        run);

}  // namespace
}  // namespace longctx::cli

// longctx bench serve: drives a running OpenAI-compatible server as `vllm bench serve` does and
// prints its throughput and latency figures. The pieces: bench_serve_options (flags),
// bench_serve_dataset (prompts), bench_serve_client (one timed streamed request),
// bench_serve_runner (arrivals and concurrency), bench_serve_metrics and bench_serve_report.
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>

#include "bench_commands.h"
#include "bench_serve_client.h"
#include "bench_serve_dataset.h"
#include "bench_serve_metrics.h"
#include "bench_serve_options.h"
#include "bench_serve_report.h"
#include "bench_serve_runner.h"
#include "longctx/error.h"
#include "text/tokenizer.h"

namespace longctx::cli {
namespace {

constexpr int64_t kProbeOutputTokens = 2;

std::string local_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y%m%d-%H%M%S", &local);
  return text;
}

// One short request before the run, so that a wrong URL, endpoint, model or key is reported as
// such instead of as num_prompts failures. Its prompt shares nothing with the benchmark's, so
// it warms no prefix cache entry the run measures.
void probe_server(BenchServeClient& client, const BenchServeOptions& options,
                  const BenchPromptSet& prompts) {
  const RequestRecord record = client.send(prompts.probe(kProbeOutputTokens), BenchClock::now());
  // A probe may legitimately end at once (EOS); what matters is a well-formed stream.
  if (!record.stream_completed) {
    fail("the probe request to ", options.server.scheme_host_port, options.server.path_prefix,
         options.endpoint, " failed: ", record.error);
  }
}

}  // namespace

int bench_serve(const std::vector<std::string>& argv) {
  const std::optional<BenchServeOptions> parsed = parse_bench_serve_options(argv);
  if (!parsed) return 0;  // --help
  const BenchServeOptions& options = *parsed;
  // A server that drops a TLS connection mid-write must fail that request, not end the process
  // (plain sockets are written with MSG_NOSIGNAL; OpenSSL's writes are not).
  std::signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<text::Tokenizer> tokenizer;
  if (options.tokenizer_dir) tokenizer = text::Tokenizer::load(*options.tokenizer_dir);

  BenchServeClient setup_client(options, options.model);
  std::string model = options.model;
  if (model.empty()) {
    const std::vector<std::string> models = setup_client.list_models();
    if (models.empty()) fail("the server lists no model in GET /v1/models; give --model");
    model = models.front();
  }
  BenchServeClient probe_client(options, model);
  const BenchPromptSet prompts(options, tokenizer.get());
  probe_server(probe_client, options, prompts);

  const BenchContext context{model, local_timestamp()};
  std::printf("longctx bench serve: %lld requests to %s%s%s, model \"%s\"\n",
              static_cast<long long>(options.num_prompts), options.server.scheme_host_port.c_str(),
              options.server.path_prefix.c_str(), options.endpoint.c_str(), model.c_str());
  std::printf(
      "  prompts: %s, %lld%s input tokens (%s)%s, %lld output tokens%s\n",
      options.dataset_name.c_str(), static_cast<long long>(options.input_len),
      options.range_ratio > 0 ? str_cat(" +-", options.range_ratio * 100, "%").c_str() : "",
      prompts.describe_vocabulary().c_str(),
      options.prefix_len > 0 ? str_cat(" after a shared prefix of ", options.prefix_len).c_str()
                             : "",
      static_cast<long long>(options.output_len), options.ignore_eos ? " (ignore_eos)" : "");
  std::printf("  request rate: %s, burstiness %g, max concurrency: %s\n",
              options.request_rate > 0 ? str_cat(options.request_rate, "/s").c_str() : "inf",
              options.burstiness,
              options.max_concurrency ? std::to_string(*options.max_concurrency).c_str() : "none");
  if (!options.max_concurrency && options.num_prompts > kMaxClientThreads) {
    std::printf("  note: at most %lld requests are in flight at once (client threads)\n",
                static_cast<long long>(kMaxClientThreads));
  }
  std::fflush(stdout);

  const BenchRun run = run_bench_serve(options, prompts, model);
  const BenchSummary summary = summarize(run, options);
  print_bench_summary(stdout, summary, options);

  if (options.save_result) {
    const std::string path = bench_result_path(options, context);
    const std::filesystem::path folder = std::filesystem::path(path).parent_path();
    if (!folder.empty()) std::filesystem::create_directories(folder);
    save_bench_result(path, run, summary, options, context);
    std::printf("result saved to %s\n", path.c_str());
  }
  if (summary.completed == 0) fail("no request completed (", summary.failed, " failed)");
  return 0;
}

}  // namespace longctx::cli

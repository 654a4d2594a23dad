// longctx bench MODE: performance figures, printed (never asserted).
#include <cstdio>
#include <string>

#include "bench_commands.h"
#include "command.h"
#include "longctx/error.h"

namespace longctx::cli {
namespace {

constexpr const char* kHelp = R"(usage: longctx bench MODE [options]   (longctx bench MODE --help for its options)

  serve     drive a running OpenAI-compatible server: throughput, TTFT, TPOT, ITL
  kernels   time the hot CUDA kernels against the device's bandwidth and FLOP peaks
  e2e       prefill and decode of a model (or synthetic V4 weights) at a given context
)";

int run(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") {
    std::fputs(kHelp, argv.empty() ? stderr : stdout);
    return argv.empty() ? 2 : 0;
  }
  const std::string mode = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (mode == "serve") return bench_serve(rest);
  if (mode == "kernels") return bench_kernels(rest);
  if (mode == "e2e") return bench_e2e(rest);
  fail("unknown bench mode '", mode, "' (expected serve, kernels or e2e)");
}

const CommandRegistration kRegistration("bench", "benchmarks: serve, kernels, e2e", run);

}  // namespace
}  // namespace longctx::cli

// longctx bench e2e: the whole forward on the CUDA backend at a given context, on a checkpoint or
// on synthetic V4 weights made on the device (bench/cuda/e2e_bench.cpp does the work).
#include <cstdio>

#include "args.h"
#include "bench_commands.h"
#include "longctx/error.h"
#ifdef LONGCTX_HAS_CUDA_BENCH
#include "cuda_bench.h"
#include "kv/kv_layout.h"
#endif

namespace longctx::cli {
namespace {

constexpr const char* kHelp =
    R"(usage: longctx bench e2e (--model DIR | --synthetic flash|pro) --context N [options]

Prefill throughput and decode step latency of the CUDA backend at a context, the KV memory
really allocated per token against the planner's figure (longctx plan-memory), and the decode
step against the time to read its weights and KV once at peak bandwidth.
  --synthetic flash|pro  random weights made on the device in the released formats (fp8 linears,
                         fp4 experts, bf16 embedding/head), real layer shapes; no checkpoint
  --layers N             synthetic: main layers (default: the preset's, 43 / 61)
  --experts E            synthetic: routed experts kept (default: all; e.g. 8 to fit one GPU)
  --context N            positions of each sequence when the last decode step runs (default 8192)
  --batch B              sequences decoded together (default 1)
  --decode-steps S       decode steps (default 16); the prefill covers N - S positions
  --chunk C              prefill chunk size (default 8192)
  --random-kv            skip the prefill: fill the KV pages with random entries, then decode
  --prefill-tokens T     with --random-kv: prefill (timed) the last T positions before the decode
                         on top of the random ones: the cost of prefill chunks deep in a context
  --kv-cache-dtype D     fp8 (default), bf16, fp32
  --indexer-dtype D      fp4 (default), bf16, fp32
  --seed S               weights and tokens (default 1)
  --stage-times          GPU time by forward stage for the prefill and one extra decode step
  --batch-invariant      fp32 kernels with a fixed reduction order for every step (default:
                         tensor cores for steps of 64 rows or more)
  --device cuda          the only device this benchmark runs on
)";

}  // namespace

int bench_e2e(const std::vector<std::string>& argv) {
  const Args args(argv, {"help", "random-kv", "batch-invariant", "stage-times"});
  if (args.has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  args.check_known({"help", "model", "synthetic", "layers", "experts", "context", "batch",
                    "decode-steps", "chunk", "random-kv", "prefill-tokens", "kv-cache-dtype",
                    "indexer-dtype", "seed", "device", "batch-invariant", "stage-times"});
  if (args.get_or("device", "cuda") != "cuda")
    fail("longctx bench e2e runs on the CUDA backend: --device cuda");
#ifdef LONGCTX_HAS_CUDA_BENCH
  bench::E2eBenchOptions options;
  options.model_dir = args.get_or("model", "");
  options.synthetic = args.get_or("synthetic", "");
  if (options.model_dir.empty() == options.synthetic.empty()) {
    fail("give exactly one of --model DIR and --synthetic flash|pro");
  }
  if (!options.model_dir.empty() && (args.has("layers") || args.has("experts"))) {
    fail("--layers and --experts shape a --synthetic model only");
  }
  options.layers = args.get_int("layers", -1);
  options.experts = args.get_int("experts", -1);
  options.context = args.get_int("context", 8192);
  options.batch = args.get_int("batch", 1);
  options.decode_steps = args.get_int("decode-steps", 16);
  options.chunk = args.get_int("chunk", 8192);
  options.random_kv = args.has("random-kv");
  options.batch_invariant = args.has("batch-invariant");
  options.stage_times = args.has("stage-times");
  options.prefill_tokens = args.get_int("prefill-tokens", -1);
  if (args.has("prefill-tokens") && (!options.random_kv || options.prefill_tokens < 1)) {
    fail("--prefill-tokens needs --random-kv and a positive count");
  }
  options.kv.kv_dtype = parse_kv_dtype(args.get_or("kv-cache-dtype", "fp8"));
  options.kv.indexer_dtype = parse_indexer_key_dtype(args.get_or("indexer-dtype", "fp4"));
  options.seed = static_cast<uint64_t>(args.get_int("seed", 1));
  if (options.context < 2 || options.batch < 1 || options.chunk < 1 || options.decode_steps < 0) {
    fail("--context, --batch and --chunk must be positive, --decode-steps not negative");
  }
  if (args.has("layers") && options.layers < 1) fail("--layers must be positive");
  if (args.has("experts") && options.experts < 1) fail("--experts must be positive");
  return bench::run_e2e_bench(options);
#else
  fail(kNoCudaBackend);
#endif
}

}  // namespace longctx::cli

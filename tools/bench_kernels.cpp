// longctx bench kernels: the hot CUDA kernels at V4-Flash and V4-Pro layer shapes against the
// device's roofline (bench/cuda/kernel_bench.cpp does the work).
#include <algorithm>
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

constexpr const char* kHelp = R"(usage: longctx bench kernels [--device cuda] [options]

Times each hot kernel (CUDA events, warm-up, median of repeats, L2 flushed before each) and
prints the bytes it must move and its FLOPs by formula, achieved GB/s and TFLOP/s, and the
fractions of the device's HBM bandwidth and dense tensor-core peak.
Cases: sparse-attention decode (c4 top-k and c128 all entries), indexer scores + top-k,
compressors, the linears of Flash and Pro in stored precision, MoE grouped GEMM with fp4
experts, hyper-connection pre, fp8 linears sharing one input (quantized once vs before).
  --only LIST          families: attention,indexer,compressor,gemm,fp8in,moe,hc,sampling (default: all)
  --models LIST        flash,pro (default both)
  --contexts LIST      attention/indexer contexts (default 8192,131072,1048576)
  --batches LIST       decode batch sizes (default 1,8,64)
  --gemm-rows LIST     M of the linears (default 1,8,64,512,4096,8192)
  --moe-tokens LIST    tokens of the MoE cases (default 1,2,4,...,256)
  --moe-prefill-tokens LIST  tokens of the MoE prefill cases, 8 experts, tensor cores vs fp32
                       (default 1024,2048,4096,8192,16384)
  --kv-cache-dtype D   KV entries: fp8 (default), bf16, fp32
  --indexer-dtype D    indexer keys: fp4 (default), bf16, fp32
  --repeats N          at most N timed repeats per case (default 50)
  --budget-ms X        time per case that sets the repeats (default 300; at least 3 repeats)
  --csv FILE           also write the table as CSV
)";

}  // namespace

int bench_kernels(const std::vector<std::string>& argv) {
  const Args args(argv, {"help"});
  if (args.has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  args.check_known({"help", "device", "only", "models", "contexts", "batches", "gemm-rows",
                    "moe-tokens", "moe-prefill-tokens", "kv-cache-dtype", "indexer-dtype", "repeats", "budget-ms",
                    "csv"});
  if (args.get_or("device", "cuda") != "cuda")
    fail("longctx bench kernels times the CUDA kernels: --device cuda");
#ifdef LONGCTX_HAS_CUDA_BENCH
  bench::KernelBenchOptions options;
  const auto words = [](const std::string& text) {
    std::vector<std::string> out;
    size_t begin = 0;
    while (begin <= text.size()) {
      const size_t end = std::min(text.find(',', begin), text.size());
      if (end > begin) out.push_back(text.substr(begin, end - begin));
      begin = end + 1;
    }
    return out;
  };
  if (args.has("only")) options.only = words(args.require("only"));
  for (const std::string& family : options.only) {
    if (family != "attention" && family != "indexer" && family != "compressor" &&
        family != "gemm" && family != "fp8in" && family != "moe" && family != "hc" && family != "sampling") {
      fail("--only: unknown family '", family,
           "' (expected attention, indexer, compressor, gemm, fp8in, moe, hc, sampling)");
    }
  }
  if (args.has("models")) options.models = words(args.require("models"));
  for (const std::string& model : options.models) {
    if (model != "flash" && model != "pro")
      fail("--models: expected flash and/or pro, got '", model, "'");
  }
  const auto positive_list = [&](const char* flag, std::vector<int64_t>* out) {
    if (!args.has(flag)) return;
    *out = parse_int_list(args.require(flag), std::string("--") + flag);
    if (out->empty()) fail("--", flag, " is empty");
    for (const int64_t v : *out) {
      if (v < 1) fail("--", flag, " values must be positive, got ", v);
    }
  };
  positive_list("contexts", &options.contexts);
  positive_list("batches", &options.batches);
  positive_list("gemm-rows", &options.gemm_rows);
  positive_list("moe-tokens", &options.moe_tokens);
  positive_list("moe-prefill-tokens", &options.moe_prefill_tokens);
  for (const int64_t context : options.contexts) {
    if (context < 4096)
      fail("--contexts: at least 4096 (the indexer must have more entries than top-k), got ",
           context);
  }
  options.kv_dtype = parse_kv_dtype(args.get_or("kv-cache-dtype", "fp8"));
  options.key_dtype = parse_indexer_key_dtype(args.get_or("indexer-dtype", "fp4"));
  options.max_repeats = static_cast<int>(args.get_int("repeats", 50));
  options.budget_ms = args.get_double("budget-ms", 300.0);
  if (options.max_repeats < 1 || options.budget_ms <= 0)
    fail("--repeats and --budget-ms must be positive");
  options.csv_path = args.get_or("csv", "");
  return bench::run_kernel_bench(options);
#else
  fail(kNoCudaBackend);
#endif
}

}  // namespace longctx::cli

// longctx plan-memory: KV cache size per token and per sequence, and what fits on a GPU.
#include <cstdio>

#include "args.h"
#include "command.h"
#include "kv/memory_plan.h"
#include "longctx/error.h"

namespace longctx::cli {
namespace {

constexpr const char* kHelp = R"(usage: longctx plan-memory (--model DIR | --config FILE) --context N [options]

Prints the KV bytes per token of each layer kind, the fixed window cost per sequence, the KV of
one sequence of N tokens, and how many such sequences fit in --gpu-memory after the weights.
  --kv-dtype bf16|fp8|fp32          main KV entries (default bf16)
  --indexer-dtype bf16|fp4|fp32     indexer keys (default: fp4 with fp8 entries, else as --kv-dtype)
  --gpu-memory GiB                  device memory to plan for
)";

int run(const std::vector<std::string>& argv) {
  const Args args(argv, {"help"});
  if (args.has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  args.check_known({"help", "model", "config", "context", "kv-dtype", "indexer-dtype", "gpu-memory"});
  if (args.has("model") == args.has("config")) fail("give exactly one of --model DIR and --config FILE");
  const std::string config_path = args.has("model") ? args.require("model") + "/config.json" : args.require("config");
  const ModelConfig config = load_model_config(config_path);
  const int64_t context = args.get_int("context", config.max_position_embeddings);
  if (context < 1) fail("--context must be positive");
  KvCacheOptions options;
  options.kv_dtype = parse_kv_dtype(args.get_or("kv-dtype", "bf16"));
  const std::string default_indexer = options.kv_dtype == KvDtype::kFP8 ? "fp4" : to_string(options.kv_dtype);
  options.indexer_dtype = parse_indexer_key_dtype(args.get_or("indexer-dtype", default_indexer));
  const double memory = args.get_double("gpu-memory", 0.0) * 1024.0 * 1024.0 * 1024.0;
  if (memory < 0) fail("--gpu-memory must not be negative");
  std::fputs(format_memory_plan(plan_memory(config, options, context, memory), options).c_str(), stdout);
  return 0;
}

const CommandRegistration kRegistration("plan-memory", "KV cache and memory planning for a model and context", run);

}  // namespace
}  // namespace longctx::cli

// longctx make-test-model OUT_DIR: a random-weight checkpoint in the released format.
#include <cstdio>

#include "args.h"
#include "command.h"
#include "longctx/error.h"
#include "model/test_model.h"
#include "text/tokenizer.h"

namespace longctx::cli {
namespace {

constexpr const char* kHelp = R"(usage: longctx make-test-model OUT_DIR [options]

Writes a random-weight DeepSeek-V4 checkpoint in exactly the released format.
  --preset tiny|flash|pro   starting dimensions (default tiny: a few MB, sliding window 16)
  --layers N                transformer blocks (the preset's layer pattern, cut or extended)
  --hidden D  --heads H  --head-dim d  --q-lora-rank R  --o-groups G  --o-lora-rank R
  --vocab V  --window W  --num-experts E  --experts-per-tok K  --moe-inter I
  --hash-layers N  --index-heads N  --index-head-dim N  --index-topk K  --mtp N
  --compress-ratios LIST    one ratio per layer and per MTP block, e.g. 0,4,128,4,0
  --dtype bf16|fp8          format of the dense linears (default fp8, as released)
  --experts bf16|fp8|fp4    format of the routed experts (default fp4, as released)
  --seed S                  random seed (default 0)
  --shards N                number of safetensors shards (default 2)
  --tokenizer DIR           copy tokenizer.json and tokenizer_config.json from DIR
)";

WeightFormat parse_format(const std::string& text, const char* flag) {
  if (text == "bf16") return WeightFormat::kBF16;
  if (text == "fp8") return WeightFormat::kFP8;
  if (text == "fp4") return WeightFormat::kFP4;
  fail("--", flag, " must be bf16, fp8 or fp4, got '", text, "'");
}

int run(const std::vector<std::string>& argv) {
  const Args args(argv, {"help"});
  if (args.has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  args.check_known({"help", "preset", "layers", "hidden", "heads", "head-dim", "q-lora-rank",
                    "o-groups", "o-lora-rank", "vocab", "window", "num-experts",
                    "experts-per-tok", "moe-inter", "hash-layers", "index-heads",
                    "index-head-dim", "index-topk", "mtp", "compress-ratios", "dtype",
                    "experts", "seed", "shards", "tokenizer"});
  if (args.positional().size() != 1) fail("expected one output folder\n", kHelp);

  const std::string preset = args.get_or("preset", "tiny");
  TestModelOptions options;
  ModelConfig& c = options.config;
  c = test_model_preset(preset, args.get_int("layers", -1));
  c.hidden_size = args.get_int("hidden", c.hidden_size);
  c.num_attention_heads = args.get_int("heads", c.num_attention_heads);
  c.head_dim = args.get_int("head-dim", c.head_dim);
  c.q_lora_rank = args.get_int("q-lora-rank", c.q_lora_rank);
  c.o_groups = args.get_int("o-groups", c.o_groups);
  c.o_lora_rank = args.get_int("o-lora-rank", c.o_lora_rank);
  c.vocab_size = args.get_int("vocab", c.vocab_size);
  c.sliding_window = args.get_int("window", c.sliding_window);
  c.n_routed_experts = args.get_int("num-experts", c.n_routed_experts);
  c.num_experts_per_tok = args.get_int("experts-per-tok", c.num_experts_per_tok);
  c.moe_intermediate_size = args.get_int("moe-inter", c.moe_intermediate_size);
  c.num_hash_layers = args.get_int("hash-layers", c.num_hash_layers);
  c.index_n_heads = args.get_int("index-heads", c.index_n_heads);
  c.index_head_dim = args.get_int("index-head-dim", c.index_head_dim);
  c.index_topk = args.get_int("index-topk", c.index_topk);
  const int64_t mtp = args.get_int("mtp", c.num_nextn_predict_layers);
  if (mtp != c.num_nextn_predict_layers) {
    c.num_nextn_predict_layers = mtp;
    c.compress_ratios.resize(static_cast<size_t>(c.num_hidden_layers));
    c.compress_ratios.resize(static_cast<size_t>(c.num_layers_with_mtp()), 0);
  }
  if (const auto ratios = args.get("compress-ratios")) {
    c.compress_ratios.clear();
    for (const int64_t ratio : parse_int_list(*ratios, "--compress-ratios")) {
      c.compress_ratios.push_back(static_cast<int>(ratio));
    }
  }
  if (const auto dtype = args.get("dtype")) {
    c.linear_format = parse_format(*dtype, "dtype");
    if (c.linear_format == WeightFormat::kFP4) fail("--dtype must be bf16 or fp8");
  }
  if (const auto experts = args.get("experts")) c.expert_format = parse_format(*experts, "experts");
  options.seed = static_cast<uint64_t>(args.get_int("seed", 0));
  options.num_shards = static_cast<int>(args.get_int("shards", 2));
  options.tokenizer_dir = args.get_or("tokenizer", "");

  write_test_model(options, args.positional()[0]);
  if (options.tokenizer_dir.empty()) text::write_test_tokenizer(args.positional()[0], c.vocab_size);
  std::printf("wrote %s test model to %s\n", preset.c_str(), args.positional()[0].c_str());
  return 0;
}

const CommandRegistration kRegistration("make-test-model",
                                        "write a random-weight checkpoint in the released format",
                                        run);

}  // namespace
}  // namespace longctx::cli

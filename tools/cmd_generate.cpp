// longctx generate: one completion from a prompt or token ids, streamed to stdout.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "args.h"
#include "command.h"
#include "longctx/engine.h"
#include "longctx/error.h"
#include "model/model_weights.h"
#include "model_options.h"
#include "text/chat_encoding.h"
#include "text/tokenizer.h"

namespace longctx::cli {
namespace {

constexpr const char* kHelp = R"(usage: longctx generate --model DIR (--prompt TEXT | --tokens 1,2,3) [options]

Generates one completion and streams it to stdout (token ids without a tokenizer or with
--print-tokens); timings go to stderr.
  --max-tokens N        tokens to generate (default 64)
  --temperature T       0 is greedy (default 1.0)
  --top-p P  --top-k K  --min-p P  --seed S
  --chat                wrap the prompt as a user turn of the V4 chat encoding
  --thinking            with --chat: thinking mode (default chat mode)
  --ignore-eos          keep going past the end-of-sequence token
  --num-speculative-tokens N   MTP speculative decoding (0 off, 1 on); same output, fewer steps
  --print-tokens        print token ids instead of text
  --device cpu|cuda  --kv-cache-dtype auto|fp32|bf16|fp8  --indexer-dtype auto|fp32|bf16|fp4
  --batch-invariant  cuda: fp32 kernels with a fixed reduction order for every step (the
                     results of the CPU reference up to fp32 rounding, whatever the batch)
)";

int run(const std::vector<std::string>& argv) {
  const Args args(argv, {"help", "chat", "thinking", "ignore-eos", "print-tokens", "batch-invariant"});
  if (args.has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  std::set<std::string> known = kModelFlags;
  known.insert({"help", "prompt", "tokens", "max-tokens", "temperature", "top-p", "top-k", "min-p", "seed",
                "chat", "thinking", "ignore-eos", "print-tokens", "num-speculative-tokens"});
  args.check_known(known);
  if (args.has("prompt") == args.has("tokens")) fail("give exactly one of --prompt TEXT and --tokens LIST");
  const std::string dir = args.require("model");

  std::shared_ptr<const text::Tokenizer> tokenizer;
  if (std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json")) {
    tokenizer = text::Tokenizer::load(dir);
  } else if (args.has("prompt")) {
    fail(dir, " has no tokenizer.json: use --tokens");
  }
  GenerationRequest request;
  if (const auto ids = args.get("tokens")) {
    for (const int64_t id : parse_int_list(*ids, "--tokens")) request.prompt.push_back(static_cast<int32_t>(id));
  } else {
    std::string prompt = args.require("prompt");
    if (args.has("chat")) {
      text::ChatOptions options;
      options.thinking_mode = args.has("thinking") ? text::ThinkingMode::kThinking : text::ThinkingMode::kChat;
      text::OrderedJson messages = text::OrderedJson::array();
      messages.push_back({{"role", "user"}, {"content", prompt}});
      prompt = text::encode_chat(messages, options);
    } else if (args.has("thinking")) {
      fail("--thinking needs --chat");
    }
    request.prompt = tokenizer->encode(prompt, /*allow_special=*/true);
  }
  SamplingParams& sampling = request.sampling;
  sampling.max_tokens = args.get_int("max-tokens", 64);
  sampling.temperature = args.get_double("temperature", 1.0);
  sampling.top_p = args.get_double("top-p", 1.0);
  sampling.top_k = args.get_int("top-k", -1);
  sampling.min_p = args.get_double("min-p", 0.0);
  if (args.has("seed")) sampling.seed = static_cast<uint64_t>(args.get_int("seed", 0));
  sampling.ignore_eos = args.has("ignore-eos");

  const auto load_start = std::chrono::steady_clock::now();
  auto model = std::make_shared<const LoadedModel>(dir);
  EngineOptions options;
  options.device = args.get_or("device", "cpu");
  options.kv_cache_dtype = args.get_or("kv-cache-dtype", "auto");
  options.indexer_dtype = args.get_or("indexer-dtype", "auto");
  options.max_num_seqs = 1;
  options.max_model_len = std::min<int64_t>(model->config().max_position_embeddings,
                                            static_cast<int64_t>(request.prompt.size()) + sampling.max_tokens);
  options.max_num_batched_tokens = std::max<int64_t>(2048, static_cast<int64_t>(request.prompt.size()));
  // Room for the whole sequence, however long.
  const SessionOptions sizing = session_options(args, options.max_model_len);
  const KvLayout layout = make_kv_layout(model->config(), sizing.kv);
  size_t block_bytes = 0;
  for (size_t pool = 0; pool < layout.compressed_ratios.size(); ++pool) block_bytes += layout.compressed_page_bytes_all_layers(pool);
  const size_t blocks = static_cast<size_t>(options.max_model_len / kKvBlockSize + 2);
  const size_t window_pages = 2 + static_cast<size_t>(options.max_num_batched_tokens / kKvBlockSize) + 2 + 8;
  options.kv_cache_memory_gib =
      static_cast<double>(blocks * block_bytes + 2 * window_pages * layout.window_page_bytes_all_layers()) /
      (1024.0 * 1024.0 * 1024.0);
  options.enable_prefix_caching = false;
  options.num_speculative_tokens = args.get_int("num-speculative-tokens", 0);
  options.batch_invariant = args.has("batch-invariant");
  auto engine = Engine::create(model, tokenizer, options);
  const auto start = std::chrono::steady_clock::now();

  auto handle = engine->submit(request);
  const bool print_tokens = args.has("print-tokens") || !tokenizer;
  int64_t generated = 0;
  std::optional<std::chrono::steady_clock::time_point> first_token;
  std::string finish = "?";
  RequestEvent event;
  while (handle->next(&event, std::chrono::hours(24))) {
    for (const SequenceDelta& delta : event.deltas) {
      if (!delta.tokens.empty() && !first_token) first_token = std::chrono::steady_clock::now();
      generated += static_cast<int64_t>(delta.tokens.size());
      if (print_tokens) {
        for (const int32_t token : delta.tokens) std::printf("%d ", token);
      } else {
        std::fwrite(delta.text.data(), 1, delta.text.size(), stdout);
      }
      std::fflush(stdout);
      if (delta.finish) finish = to_string(*delta.finish);
    }
    if (event.final && !event.error.empty()) fail(event.error);
  }
  const auto end = std::chrono::steady_clock::now();
  std::printf("\n");
  const double load_s = std::chrono::duration<double>(start - load_start).count();
  const double prefill_s = first_token ? std::chrono::duration<double>(*first_token - start).count() : 0.0;
  const double decode_s = first_token ? std::chrono::duration<double>(end - *first_token).count() : 0.0;
  std::fprintf(stderr,
               "[%s] load %.2f s | prompt %zu tokens, first token after %.3f s (%.1f tok/s) | %lld generated, "
               "%.1f tok/s | finish: %s\n",
               options.device.c_str(), load_s, request.prompt.size(), prefill_s,
               prefill_s > 0 ? static_cast<double>(request.prompt.size()) / prefill_s : 0.0,
               static_cast<long long>(generated), decode_s > 0 ? static_cast<double>(generated - 1) / decode_s : 0.0,
               finish.c_str());
  if (options.num_speculative_tokens > 0) {
    const EngineMetrics metrics = engine->metrics();
    std::fprintf(stderr, "MTP drafts: %lld verified, %lld accepted\n",
                 static_cast<long long>(metrics.spec_decode_draft_tokens_total),
                 static_cast<long long>(metrics.spec_decode_accepted_tokens_total));
  }
  return 0;
}

const CommandRegistration kRegistration("generate", "generate a completion from a prompt or token ids", run);

}  // namespace
}  // namespace longctx::cli

// longctx logits: the logits of every position of a token sequence, for comparing paths.
#include <cstdio>
#include <fstream>

#include "args.h"
#include "command.h"
#include "engine/sequence_runner.h"
#include "longctx/error.h"
#include "model_options.h"

namespace longctx::cli {
namespace {

constexpr const char* kHelp = R"(usage: longctx logits --model DIR --tokens 1,2,3,... --output FILE [options]

Writes float32 little-endian logits [n_tokens, vocab], one row per position.
  --prefill N           the first N tokens go through one prefill (default: all), the rest
                        through one-token decode steps
  --chunk-size C        split the prefill into chunks of C tokens (chunked prefill)
  --mtp-output FILE     also write the MTP block's logits [n_tokens - 1, vocab]: row p predicts
                        the token after p + 1 from the hidden state of p and the token of p + 1
  --device cpu|cuda     (default cpu)
  --kv-cache-dtype auto|fp32|bf16|fp8     (auto: fp32 on cpu, bf16 on cuda)
  --indexer-dtype auto|fp32|bf16|fp4
  --batch-invariant     cuda: fp32 kernels with a fixed reduction order for every step, for
                        comparing with the CPU reference (default: tensor cores for steps of
                        64 rows or more)
)";

void write_floats(const std::string& path, const std::vector<float>& values) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create ", path);
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
  if (!out) fail("cannot write ", path);
}

int run(const std::vector<std::string>& argv) {
  const Args args(argv, {"help", "batch-invariant"});
  if (args.has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  std::set<std::string> known = kModelFlags;
  known.insert({"help", "tokens", "prefill", "chunk-size", "output", "mtp-output"});
  args.check_known(known);
  std::vector<int32_t> tokens;
  for (const int64_t id : parse_int_list(args.require("tokens"), "--tokens")) tokens.push_back(static_cast<int32_t>(id));
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t prefill = args.get_int("prefill", n);
  if (prefill < 1 || prefill > n) fail("--prefill must be in [1, ", n, "], got ", prefill);
  const int64_t chunk_size = args.get_int("chunk-size", prefill);
  if (chunk_size < 1) fail("--chunk-size must be positive");
  const std::string output_path = args.require("output");
  const std::string mtp_path = args.get_or("mtp-output", "");

  const auto model = load_model(args);
  const ModelConfig& config = model->config();
  if (!mtp_path.empty() && config.num_nextn_predict_layers == 0) fail("the model has no MTP block");
  ModelSession session(model, session_options(args, n));
  SequenceRunner runner(session.backend(), session.kv());

  std::vector<float> logits;
  std::vector<float> mtp_logits;
  // Steps: chunks of the prefill, then one token at a time.
  int64_t position = 0;
  while (position < n) {
    const int64_t size = position < prefill ? std::min(chunk_size, prefill - position) : 1;
    const std::span<const int32_t> step(tokens.data() + position, static_cast<size_t>(size));
    const ForwardOutput& out = runner.run(step, size, /*return_hidden=*/!mtp_path.empty());
    logits.insert(logits.end(), out.logits.begin(), out.logits.end());
    if (!mtp_path.empty()) {
      // The MTP block sees position p with the token of p + 1, which the last position lacks.
      const int64_t mtp_rows = std::min(size, n - 1 - position);
      if (mtp_rows > 0) {
        const std::vector<float> hidden = out.hidden;
        const size_t per_row = static_cast<size_t>(config.hc_mult * config.hidden_size);
        const ForwardOutput& mtp = runner.run_mtp(
            std::span<const int32_t>(tokens.data() + position + 1, static_cast<size_t>(mtp_rows)),
            std::span<const float>(hidden.data(), static_cast<size_t>(mtp_rows) * per_row), mtp_rows);
        mtp_logits.insert(mtp_logits.end(), mtp.logits.begin(), mtp.logits.end());
      }
    }
    runner.commit();
    position += size;
  }
  write_floats(output_path, logits);
  if (!mtp_path.empty()) write_floats(mtp_path, mtp_logits);
  std::fprintf(stderr, "wrote logits [%lld, %lld] to %s\n", static_cast<long long>(n),
               static_cast<long long>(config.vocab_size), output_path.c_str());
  return 0;
}

const CommandRegistration kRegistration("logits", "write the logits of every position of a token sequence", run);

}  // namespace
}  // namespace longctx::cli

// The CPU reference against golden logits from an independent PyTorch transcription of the V4
// forward (tools/reference/dsv4_torch_reference.py), on the bundled test model and on a
// low-chaos probe model. See tests/fixtures/golden/golden.json for how they were made.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "common/json_util.h"
#include "common/mapped_file.h"
#include "engine/model_session.h"
#include "engine/sequence_runner.h"
#include "model/test_model.h"
#include "support/test_model_dir.h"

namespace longctx {
namespace {

const std::string kGoldenDir = std::string(LONGCTX_SOURCE_DIR) + "/tests/fixtures/golden/";

std::vector<float> read_floats(const std::string& path) {
  const std::string bytes = read_text_file(path, 64u << 20);
  std::vector<float> values(bytes.size() / 4);
  std::memcpy(values.data(), bytes.data(), values.size() * 4);
  return values;
}

struct RunResult {
  std::vector<float> logits, mtp;
};

RunResult run_model(const std::string& dir, const std::vector<int32_t>& tokens) {
  auto model = std::make_shared<const LoadedModel>(dir);
  SessionOptions options;
  options.max_tokens = static_cast<int64_t>(tokens.size());
  ModelSession session(model, options);
  SequenceRunner runner(session.backend(), session.kv());
  const ForwardOutput& out = runner.run(tokens, static_cast<int64_t>(tokens.size()), true);
  RunResult result;
  result.logits = out.logits;
  const std::vector<float> hidden = out.hidden;
  const size_t per_row = static_cast<size_t>(model->config().hc_mult * model->config().hidden_size);
  const size_t n = tokens.size() - 1;
  result.mtp = runner.run_mtp(std::span<const int32_t>(tokens.data() + 1, n),
                              std::span<const float>(hidden.data(), n * per_row), static_cast<int64_t>(n))
                   .logits;
  runner.commit();
  return result;
}

// Worst per-row max|a - golden| / max|golden| over the listed positions.
double compare(const std::vector<float>& all, const std::vector<float>& golden, const Json& positions,
               size_t vocab) {
  double worst = 0;
  size_t row = 0;
  for (const Json& position : positions) {
    const size_t p = position.get<size_t>();
    double diff = 0, scale = 0;
    for (size_t v = 0; v < vocab; ++v) {
      diff = std::max(diff, std::fabs(static_cast<double>(all[p * vocab + v]) - golden[row * vocab + v]));
      scale = std::max(scale, std::fabs(static_cast<double>(golden[row * vocab + v])));
    }
    worst = std::max(worst, diff / scale);
    ++row;
  }
  return worst;
}

class GoldenLogits : public ::testing::Test {
 protected:
  void check(const std::string& name, const std::string& dir) {
    const Json spec = read_json_file(kGoldenDir + "golden.json", 1 << 20);
    std::vector<int32_t> tokens;
    for (const Json& t : spec["tokens"]) tokens.push_back(t.get<int32_t>());
    const RunResult result = run_model(dir, tokens);
    const size_t vocab = result.logits.size() / tokens.size();
    const double main_error = compare(result.logits, read_floats(kGoldenDir + name + "_logits.bin"),
                                      spec[name]["positions"], vocab);
    const double mtp_error = compare(result.mtp, read_floats(kGoldenDir + name + "_mtp_logits.bin"),
                                     spec[name]["mtp_positions"], vocab);
    std::printf("%s: max relative error vs PyTorch transcription %.3g (main), %.3g (MTP)\n",
                name.c_str(), main_error, mtp_error);
    EXPECT_LT(main_error, 1e-4);
    EXPECT_LT(mtp_error, 1e-4);
  }
};

TEST_F(GoldenLogits, BundledTestModel) { check("tiny_fp8", testing::tiny_model_dir()); }

TEST_F(GoldenLogits, LowChaosProbeModelAcrossEveryBoundary) {
  ModelConfig config = test_model_preset("tiny");
  config.linear_format = WeightFormat::kBF16;
  config.expert_format = WeightFormat::kBF16;
  config.num_hash_layers = 4;
  config.index_topk = 512;
  check("probe_bf16", testing::test_model_dir("probe", config, 5));
}

}  // namespace
}  // namespace longctx

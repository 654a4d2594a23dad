#include "longctx/model_config.h"

#include <gtest/gtest.h>

#include "common/json_util.h"
#include "common/mapped_file.h"
#include "longctx/error.h"

namespace longctx {
namespace {

std::string fixture(const std::string& name) {
  return read_text_file(std::string(LONGCTX_SOURCE_DIR) + "/tests/fixtures/" + name, 1 << 20);
}

// Parses `edit(config.json of V4-Pro)`; returns the error message or "" on success.
template <typename Edit>
std::string parse_error_after(Edit edit) {
  Json json = parse_json(fixture("deepseek-v4-pro-config.json"), "fixture");
  edit(json);
  try {
    parse_model_config(json.dump(), "config.json");
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(ModelConfig, LoadsTheReleasedProConfig) {
  std::vector<std::string> warnings;
  const ModelConfig c =
      parse_model_config(fixture("deepseek-v4-pro-config.json"), "pro", &warnings);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.num_attention_heads, 128);
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.o_groups, 16);
  EXPECT_EQ(c.o_lora_rank, 1024);
  EXPECT_EQ(c.sliding_window, 128);
  ASSERT_EQ(c.compress_ratios.size(), 62u);
  EXPECT_EQ(c.compress_ratio(0), 128);
  EXPECT_EQ(c.compress_ratio(2), 4);
  EXPECT_EQ(c.compress_ratio(60), 4);
  EXPECT_EQ(c.compress_ratio(61), 0);
  EXPECT_EQ(c.index_topk, 1024);
  EXPECT_EQ(c.n_routed_experts, 384);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.moe_intermediate_size, 3072);
  EXPECT_EQ(c.num_hash_layers, 3);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSqrtSoftplus);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_DOUBLE_EQ(c.swiglu_limit, 10.0);
  EXPECT_EQ(c.hc_mult, 4);
  EXPECT_EQ(c.hc_sinkhorn_iters, 20);
  EXPECT_DOUBLE_EQ(c.compress_rope_theta, 160000);
  EXPECT_TRUE(c.rope_scaling.enabled);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 16);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 65536);
  EXPECT_EQ(c.linear_format, WeightFormat::kFP8);
  EXPECT_EQ(c.expert_format, WeightFormat::kFP4);
  EXPECT_EQ(c.max_position_embeddings, 1048576);
}

TEST(ModelConfig, LoadsTheFlashConfig) {
  const ModelConfig c = parse_model_config(fixture("deepseek-v4-flash-config.json"), "flash");
  EXPECT_EQ(c.num_hidden_layers, 43);
  EXPECT_EQ(c.o_groups, 8);
  EXPECT_EQ(c.compress_ratio(0), 0);
  EXPECT_EQ(c.compress_ratio(43), 0);
}

TEST(ModelConfig, DefaultsFillOmittedFields) {
  const std::string message = parse_error_after([](Json& j) {
    j.erase("hc_mult");
    j.erase("hc_eps");
    j.erase("swiglu_limit");
  });
  EXPECT_EQ(message, "");
  Json json = parse_json(fixture("deepseek-v4-pro-config.json"), "fixture");
  json.erase("expert_dtype");
  json.erase("hc_sinkhorn_iters");
  const ModelConfig c = parse_model_config(json.dump(), "x");
  EXPECT_EQ(c.hc_sinkhorn_iters, 20);
  EXPECT_EQ(c.expert_format, WeightFormat::kFP8);  // experts follow the linears
}

TEST(ModelConfig, MissingRequiredFieldIsNamed) {
  const std::string message = parse_error_after([](Json& j) { j.erase("hidden_size"); });
  EXPECT_NE(message.find("required field 'hidden_size' is missing"), std::string::npos) << message;
}

TEST(ModelConfig, CompressRatiosMustCoverLayersAndMtp) {
  const std::string message =
      parse_error_after([](Json& j) { j["compress_ratios"].erase(j["compress_ratios"].size() - 1); });
  EXPECT_NE(message.find("compress_ratios has 61 entries, expected"), std::string::npos) << message;
}

TEST(ModelConfig, HeadDimMustBeAMultipleOf64) {
  const std::string message = parse_error_after([](Json& j) { j["head_dim"] = 500; });
  EXPECT_NE(message.find("head_dim must be a positive multiple of 64, found 500"), std::string::npos)
      << message;
}

TEST(ModelConfig, RejectsInconsistentOrMistypedFields) {
  EXPECT_NE(parse_error_after([](Json& j) { j["num_key_value_heads"] = 8; }).find("num_key_value_heads"),
            std::string::npos);
  EXPECT_NE(parse_error_after([](Json& j) { j["num_experts_per_tok"] = 400; }).find("num_experts_per_tok"),
            std::string::npos);
  EXPECT_NE(parse_error_after([](Json& j) { j["vocab_size"] = "big"; }).find("must be an integer"),
            std::string::npos);
  EXPECT_NE(parse_error_after([](Json& j) { j["compress_ratios"][5] = 3; }).find("compress_ratios[5]"),
            std::string::npos);
  EXPECT_NE(parse_error_after([](Json& j) { j["model_type"] = "llama"; }).find("deepseek_v4"),
            std::string::npos);
  EXPECT_NE(parse_error_after([](Json& j) { j["scoring_func"] = "relu"; }).find("scoring_func"),
            std::string::npos);
  EXPECT_NE(parse_error_after([](Json& j) { j["o_groups"] = 7; }).find("o_groups"), std::string::npos);
  EXPECT_NE(parse_error_after([](Json& j) { j["quantization_config"]["weight_block_size"] = {64, 64}; })
                .find("weight_block_size"),
            std::string::npos);
}

TEST(ModelConfig, UnknownFieldsAreWarnedAbout) {
  Json json = parse_json(fixture("deepseek-v4-pro-config.json"), "fixture");
  json["shiny_new_feature"] = 3;
  std::vector<std::string> warnings;
  parse_model_config(json.dump(), "config.json", &warnings);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("shiny_new_feature"), std::string::npos);
}

TEST(ModelConfig, MalformedJsonIsAClearError) {
  try {
    parse_model_config("{\"vocab_size\": 12,", "config.json");
    FAIL();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("config.json is not valid JSON"), std::string::npos);
  }
}

TEST(ModelConfig, WrittenJsonParsesBackToTheSameConfig) {
  const ModelConfig c = parse_model_config(fixture("deepseek-v4-pro-config.json"), "pro");
  const ModelConfig again = parse_model_config(model_config_to_json(c), "round trip");
  EXPECT_EQ(model_config_to_json(again), model_config_to_json(c));
  EXPECT_EQ(again.compress_ratios, c.compress_ratios);
  EXPECT_EQ(again.expert_format, WeightFormat::kFP4);
}

}  // namespace
}  // namespace longctx

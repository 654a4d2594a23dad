// The `deepseek_v4` config.json schema: every field the V4 forward reads, with the release's
// defaults where a field may be omitted, and the checks that make a config consistent.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace longctx {

enum class ScoringFunc { kSoftmax, kSigmoid, kSqrtSoftplus };
// Storage format of a group of linear weights.
enum class WeightFormat { kBF16, kFP8, kFP4 };

const char* to_string(ScoringFunc func);
const char* to_string(WeightFormat format);

struct YarnScaling {
  bool enabled = false;
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
};

struct ModelConfig {
  // Sizes.
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;              // D
  int64_t num_hidden_layers = 0;
  int64_t num_nextn_predict_layers = 0;  // MTP blocks
  int64_t num_attention_heads = 0;      // H
  int64_t num_key_value_heads = 1;      // always 1: one shared KV vector per token
  int64_t head_dim = 512;               // d, also the KV vector width
  int64_t qk_rope_head_dim = 64;        // rotary part: the last dims of each head
  int64_t q_lora_rank = 0;
  int64_t o_groups = 8;
  int64_t o_lora_rank = 1024;
  int64_t sliding_window = 128;
  std::vector<int> compress_ratios;  // one per layer, then one per MTP block
  int64_t index_n_heads = 64;
  int64_t index_head_dim = 128;
  int64_t index_topk = 512;
  // Mixture of experts.
  int64_t n_routed_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_shared_experts = 1;
  int64_t moe_intermediate_size = 0;
  int64_t num_hash_layers = 0;
  ScoringFunc scoring_func = ScoringFunc::kSqrtSoftplus;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  double swiglu_limit = 0.0;  // 0: no clamp
  // Hyper-connections.
  int64_t hc_mult = 4;
  int64_t hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  // Positions and norms.
  double rope_theta = 10000.0;
  double compress_rope_theta = 40000.0;
  YarnScaling rope_scaling;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 1048576;
  // Weight formats: fp8 e4m3 with 128x128 ue8m0 block scales when quantization_config is set.
  WeightFormat linear_format = WeightFormat::kBF16;
  WeightFormat expert_format = WeightFormat::kBF16;
  // Tokens.
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;

  int64_t num_layers_with_mtp() const { return num_hidden_layers + num_nextn_predict_layers; }
  int compress_ratio(int64_t layer) const { return compress_ratios.at(static_cast<size_t>(layer)); }
  // Ratio-4 layers use overlapping compression windows and the lightning indexer.
  static bool ratio_uses_indexer(int ratio) { return ratio == 4; }
  bool is_hash_layer(int64_t layer) const { return layer < num_hash_layers; }
  int64_t nope_head_dim() const { return head_dim - qk_rope_head_dim; }

  // Throws Error naming the first field that is missing, mistyped or inconsistent.
  void validate() const;
};

// Parses config.json text. Unknown fields are reported through `warnings` (one line each).
ModelConfig parse_model_config(const std::string& json_text, const std::string& source_name,
                               std::vector<std::string>* warnings = nullptr);
// Reads and parses a config.json file; warnings are logged.
ModelConfig load_model_config(const std::string& path);
// The config as config.json text in the release's field names.
std::string model_config_to_json(const ModelConfig& config);

}  // namespace longctx

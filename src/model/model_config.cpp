#include "longctx/model_config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>

#include "common/json_util.h"
#include "common/log.h"
#include "common/mapped_file.h"
#include "longctx/error.h"

namespace longctx {
namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;
constexpr int64_t kKvBlockSize = 256;  // logical KV block; compression ratios must divide it

// Fields of the released config.json that the forward does not need; they are accepted
// silently. Fields in neither list are reported as unknown.
const std::set<std::string> kIgnoredFields = {
    "architectures",  "attention_dropout",    "initializer_range", "transformers_version",
    "use_cache",      "torch_dtype",          "_name_or_path",     "auto_map",
    "pad_token_id",   "first_k_dense_replace", "hidden_act",       "topk_method",
    "attention_bias", "tie_word_embeddings",  "model_type",        "dtype"};

class FieldReader {
 public:
  FieldReader(const Json& root, const std::string& source) : root_(root), source_(source) {}

  const Json* find(const std::string& name) {
    used_.insert(name);
    const auto it = root_.find(name);
    if (it == root_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  int64_t integer(const std::string& name, std::optional<int64_t> fallback) {
    const Json* value = find(name);
    if (value == nullptr) {
      if (!fallback) fail(source_, ": required field '", name, "' is missing");
      return *fallback;
    }
    if (value->is_number_integer()) return value->get<int64_t>();
    if (value->is_number_float()) {
      const double number = value->get<double>();
      if (std::floor(number) == number && std::fabs(number) < 9e15) return static_cast<int64_t>(number);
    }
    fail(source_, ": field '", name, "' must be an integer, found ", json_type_name(*value), " ",
         value->dump());
  }

  double number(const std::string& name, std::optional<double> fallback) {
    const Json* value = find(name);
    if (value == nullptr) {
      if (!fallback) fail(source_, ": required field '", name, "' is missing");
      return *fallback;
    }
    if (!value->is_number()) {
      fail(source_, ": field '", name, "' must be a number, found ", json_type_name(*value));
    }
    return value->get<double>();
  }

  bool boolean(const std::string& name, bool fallback) {
    const Json* value = find(name);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) {
      fail(source_, ": field '", name, "' must be true or false, found ", json_type_name(*value));
    }
    return value->get<bool>();
  }

  std::string string(const std::string& name, const std::string& fallback) {
    const Json* value = find(name);
    if (value == nullptr) return fallback;
    if (!value->is_string()) {
      fail(source_, ": field '", name, "' must be a string, found ", json_type_name(*value));
    }
    return value->get<std::string>();
  }

  std::vector<std::string> unknown_fields() const {
    std::vector<std::string> unknown;
    for (const auto& [key, value] : root_.items()) {
      if (!used_.count(key) && !kIgnoredFields.count(key)) unknown.push_back(key);
    }
    return unknown;
  }

  const std::string& source() const { return source_; }

 private:
  const Json& root_;
  std::string source_;
  std::set<std::string> used_;
};

ScoringFunc parse_scoring(const std::string& name, const std::string& source) {
  if (name == "softmax") return ScoringFunc::kSoftmax;
  if (name == "sigmoid") return ScoringFunc::kSigmoid;
  if (name == "sqrtsoftplus") return ScoringFunc::kSqrtSoftplus;
  fail(source, ": scoring_func must be softmax, sigmoid or sqrtsoftplus, found '", name, "'");
}

void parse_quantization(const Json* quant, ModelConfig& config, const std::string& source) {
  if (quant == nullptr) {
    config.linear_format = WeightFormat::kBF16;
    return;
  }
  if (!quant->is_object()) fail(source, ": quantization_config must be an object");
  const std::string method = quant->value("quant_method", "");
  if (method != "fp8") {
    fail(source, ": quantization_config.quant_method must be \"fp8\", found \"", method, "\"");
  }
  const std::string fmt = quant->value("fmt", "e4m3");
  if (fmt != "e4m3") fail(source, ": quantization_config.fmt must be \"e4m3\", found \"", fmt, "\"");
  const std::string scale_fmt = quant->value("scale_fmt", "ue8m0");
  if (scale_fmt != "ue8m0") {
    fail(source, ": quantization_config.scale_fmt must be \"ue8m0\" (power-of-two scales), found \"",
         scale_fmt, "\"");
  }
  if (quant->contains("weight_block_size")) {
    const Json& block = (*quant)["weight_block_size"];
    if (block != Json::array({128, 128})) {
      fail(source, ": quantization_config.weight_block_size must be [128, 128], found ", block.dump());
    }
  }
  config.linear_format = WeightFormat::kFP8;
}

void parse_rope_scaling(const Json* scaling, ModelConfig& config, const std::string& source) {
  if (scaling == nullptr) return;
  if (!scaling->is_object()) fail(source, ": rope_scaling must be an object");
  const std::string type = scaling->value("type", scaling->value("rope_type", ""));
  if (type != "yarn") fail(source, ": rope_scaling.type must be \"yarn\", found \"", type, "\"");
  auto number = [&](const char* name, double fallback) {
    if (!scaling->contains(name)) return fallback;
    const Json& value = (*scaling)[name];
    if (!value.is_number()) fail(source, ": rope_scaling.", name, " must be a number");
    return value.get<double>();
  };
  YarnScaling& yarn = config.rope_scaling;
  yarn.enabled = true;
  yarn.factor = number("factor", 1.0);
  yarn.original_max_position_embeddings =
      static_cast<int64_t>(number("original_max_position_embeddings", 0.0));
  yarn.beta_fast = number("beta_fast", 32.0);
  yarn.beta_slow = number("beta_slow", 1.0);
  if (yarn.original_max_position_embeddings <= 0) {
    fail(source, ": rope_scaling.original_max_position_embeddings must be positive");
  }
}

bool is_power_of_two(int64_t value) { return value > 0 && (value & (value - 1)) == 0; }

}  // namespace

const char* to_string(ScoringFunc func) {
  switch (func) {
    case ScoringFunc::kSoftmax: return "softmax";
    case ScoringFunc::kSigmoid: return "sigmoid";
    case ScoringFunc::kSqrtSoftplus: return "sqrtsoftplus";
  }
  return "?";
}

const char* to_string(WeightFormat format) {
  switch (format) {
    case WeightFormat::kBF16: return "bf16";
    case WeightFormat::kFP8: return "fp8";
    case WeightFormat::kFP4: return "fp4";
  }
  return "?";
}

void ModelConfig::validate() const {
  auto require = [](bool condition, auto&&... message) {
    if (!condition) fail("config: ", message...);
  };
  require(vocab_size > 0, "vocab_size must be positive, found ", vocab_size);
  require(hidden_size > 0, "hidden_size must be positive, found ", hidden_size);
  require(num_hidden_layers > 0, "num_hidden_layers must be positive, found ", num_hidden_layers);
  require(num_nextn_predict_layers >= 0, "num_nextn_predict_layers must be >= 0");
  require(num_attention_heads > 0, "num_attention_heads must be positive");
  require(num_key_value_heads == 1,
          "num_key_value_heads must be 1 (V4 shares one KV vector per token), found ",
          num_key_value_heads);
  require(head_dim > 0 && head_dim % 64 == 0, "head_dim must be a positive multiple of 64, found ",
          head_dim);
  require(qk_rope_head_dim > 0 && qk_rope_head_dim % 2 == 0 && qk_rope_head_dim < head_dim &&
              qk_rope_head_dim <= 512,
          "qk_rope_head_dim must be even and smaller than head_dim ", head_dim, ", found ",
          qk_rope_head_dim);
  require(nope_head_dim() % 64 == 0, "head_dim - qk_rope_head_dim must be a multiple of 64 (fp8 ",
          "blocks of the KV vector), found ", nope_head_dim());
  require(q_lora_rank > 0, "q_lora_rank must be positive");
  require(o_groups > 0 && (num_attention_heads * head_dim) % o_groups == 0 &&
              num_attention_heads % o_groups == 0,
          "o_groups ", o_groups, " must divide num_attention_heads ", num_attention_heads);
  require(o_lora_rank > 0, "o_lora_rank must be positive");
  require(sliding_window >= 1 && sliding_window <= kKvBlockSize,
          "sliding_window must be in [1, ", kKvBlockSize, "], found ", sliding_window);
  require(static_cast<int64_t>(compress_ratios.size()) == num_layers_with_mtp(),
          "compress_ratios has ", compress_ratios.size(),
          " entries, expected num_hidden_layers + num_nextn_predict_layers = ",
          num_layers_with_mtp());
  bool any_indexer = false;
  for (size_t i = 0; i < compress_ratios.size(); ++i) {
    const int ratio = compress_ratios[i];
    require(ratio == 0 || (is_power_of_two(ratio) && ratio >= 2 && ratio <= kKvBlockSize),
            "compress_ratios[", i, "] = ", ratio, " must be 0 or a power of two in [2, ",
            kKvBlockSize, "]");
    any_indexer = any_indexer || ratio_uses_indexer(ratio);
  }
  if (any_indexer) {
    require(index_n_heads > 0, "index_n_heads must be positive");
    require(is_power_of_two(index_head_dim) && index_head_dim >= 32 &&
                index_head_dim >= qk_rope_head_dim,
            "index_head_dim must be a power of two >= 32 and >= qk_rope_head_dim (Hadamard ",
            "transform and fp4 blocks of 32), found ", index_head_dim);
    require(index_topk > 0, "index_topk must be positive");
  }
  require(n_routed_experts > 0, "n_routed_experts must be positive");
  require(num_experts_per_tok > 0 && num_experts_per_tok <= n_routed_experts,
          "num_experts_per_tok must be in [1, n_routed_experts = ", n_routed_experts, "], found ",
          num_experts_per_tok);
  require(n_shared_experts == 0 || n_shared_experts == 1,
          "n_shared_experts must be 0 or 1, found ", n_shared_experts);
  require(moe_intermediate_size > 0, "moe_intermediate_size must be positive");
  require(num_hash_layers >= 0 && num_hash_layers <= num_hidden_layers,
          "num_hash_layers must be in [0, num_hidden_layers]");
  require(swiglu_limit >= 0.0, "swiglu_limit must be >= 0");
  require(hc_mult >= 1, "hc_mult must be >= 1");
  require(hc_sinkhorn_iters >= 1, "hc_sinkhorn_iters must be >= 1");
  require(rope_theta > 0 && compress_rope_theta > 0, "rope thetas must be positive");
  require(rms_norm_eps > 0, "rms_norm_eps must be positive");
  require(max_position_embeddings > 0, "max_position_embeddings must be positive");
  require(bos_token_id >= 0 && bos_token_id < vocab_size, "bos_token_id out of the vocabulary");
  require(eos_token_id >= 0 && eos_token_id < vocab_size, "eos_token_id out of the vocabulary");
  // Quantized linears quantize their activations in blocks of 128 along the input.
  auto check_k = [&](WeightFormat format, int64_t k, const char* what) {
    if (format == WeightFormat::kBF16) return;
    require(k % 128 == 0, what, " = ", k, " must be a multiple of 128 for ", to_string(format),
            " weights (activations are quantized in blocks of 128)");
  };
  check_k(linear_format, hidden_size, "hidden_size");
  check_k(linear_format, q_lora_rank, "q_lora_rank");
  check_k(linear_format, o_groups * o_lora_rank, "o_groups * o_lora_rank");
  check_k(linear_format, moe_intermediate_size, "moe_intermediate_size");
  check_k(expert_format, hidden_size, "hidden_size");
  check_k(expert_format, moe_intermediate_size, "moe_intermediate_size");
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& source,
                               std::vector<std::string>* warnings) {
  const Json root = parse_json(json_text, source);
  if (!root.is_object()) fail(source, ": config must be a JSON object");
  FieldReader read(root, source);
  ModelConfig config;

  const std::string model_type = read.string("model_type", "");
  if (model_type != "deepseek_v4") {
    fail(source, ": model_type must be \"deepseek_v4\", found \"", model_type, "\"");
  }
  config.vocab_size = read.integer("vocab_size", std::nullopt);
  config.hidden_size = read.integer("hidden_size", std::nullopt);
  config.num_hidden_layers = read.integer("num_hidden_layers", std::nullopt);
  config.num_nextn_predict_layers = read.integer("num_nextn_predict_layers", 0);
  config.num_attention_heads = read.integer("num_attention_heads", std::nullopt);
  config.num_key_value_heads = read.integer("num_key_value_heads", 1);
  config.head_dim = read.integer("head_dim", 512);
  config.qk_rope_head_dim = read.integer("qk_rope_head_dim", 64);
  config.q_lora_rank = read.integer("q_lora_rank", std::nullopt);
  config.o_groups = read.integer("o_groups", 8);
  config.o_lora_rank = read.integer("o_lora_rank", 1024);
  config.sliding_window = read.integer("sliding_window", 128);

  const Json* ratios = read.find("compress_ratios");
  if (ratios == nullptr) fail(source, ": required field 'compress_ratios' is missing");
  if (!ratios->is_array()) fail(source, ": compress_ratios must be an array of integers");
  for (const Json& ratio : *ratios) {
    if (!ratio.is_number_integer()) {
      fail(source, ": compress_ratios must hold integers, found ", ratio.dump());
    }
    const int64_t value = ratio.get<int64_t>();
    if (value < 0 || value > std::numeric_limits<int>::max()) {
      fail(source, ": compress_ratios entry ", value, " is out of range");
    }
    config.compress_ratios.push_back(static_cast<int>(value));
  }

  config.index_n_heads = read.integer("index_n_heads", 64);
  config.index_head_dim = read.integer("index_head_dim", 128);
  config.index_topk = read.integer("index_topk", 512);
  config.n_routed_experts = read.integer("n_routed_experts", std::nullopt);
  config.num_experts_per_tok = read.integer("num_experts_per_tok", std::nullopt);
  config.n_shared_experts = read.integer("n_shared_experts", 1);
  config.moe_intermediate_size = read.integer("moe_intermediate_size", std::nullopt);
  config.num_hash_layers = read.integer("num_hash_layers", 0);
  config.scoring_func = parse_scoring(read.string("scoring_func", "sqrtsoftplus"), source);
  config.routed_scaling_factor = read.number("routed_scaling_factor", 1.0);
  config.norm_topk_prob = read.boolean("norm_topk_prob", true);
  config.swiglu_limit = read.number("swiglu_limit", 0.0);
  config.hc_mult = read.integer("hc_mult", 4);
  config.hc_sinkhorn_iters = read.integer("hc_sinkhorn_iters", 20);
  config.hc_eps = read.number("hc_eps", 1e-6);
  config.rope_theta = read.number("rope_theta", 10000.0);
  config.compress_rope_theta = read.number("compress_rope_theta", 40000.0);
  parse_rope_scaling(read.find("rope_scaling"), config, source);
  config.rms_norm_eps = read.number("rms_norm_eps", 1e-6);
  config.max_position_embeddings = read.integer("max_position_embeddings", 1048576);
  config.bos_token_id = read.integer("bos_token_id", 0);
  config.eos_token_id = read.integer("eos_token_id", 1);
  parse_quantization(read.find("quantization_config"), config, source);

  const std::string expert_dtype = read.string("expert_dtype", "");
  if (expert_dtype.empty()) {
    config.expert_format = config.linear_format;
  } else if (expert_dtype == "fp4") {
    config.expert_format = WeightFormat::kFP4;
  } else if (expert_dtype == "fp8") {
    config.expert_format = WeightFormat::kFP8;
  } else if (expert_dtype == "bf16") {
    config.expert_format = WeightFormat::kBF16;
  } else {
    fail(source, ": expert_dtype must be \"fp4\", \"fp8\" or \"bf16\", found \"", expert_dtype, "\"");
  }

  // Fields we accept but whose other values the forward does not implement.
  if (const Json* act = read.find("hidden_act"); act != nullptr && *act != "silu") {
    fail(source, ": hidden_act must be \"silu\", found ", act->dump());
  }
  if (const Json* tie = read.find("tie_word_embeddings"); tie != nullptr && *tie != false) {
    fail(source, ": tie_word_embeddings must be false for deepseek_v4");
  }
  if (const Json* bias = read.find("attention_bias"); bias != nullptr && *bias != false) {
    fail(source, ": attention_bias must be false for deepseek_v4");
  }

  for (const std::string& field : read.unknown_fields()) {
    const std::string message = str_cat(source, ": unknown field '", field, "' ignored");
    if (warnings != nullptr) warnings->push_back(message);
  }
  try {
    config.validate();
  } catch (const Error& error) {
    fail(source, ": ", error.what());
  }
  return config;
}

ModelConfig load_model_config(const std::string& path) {
  std::vector<std::string> warnings;
  ModelConfig config = parse_model_config(read_text_file(path, kMaxConfigBytes), path, &warnings);
  for (const std::string& warning : warnings) log::warn(warning);
  return config;
}

std::string model_config_to_json(const ModelConfig& config) {
  Json root;
  root["architectures"] = Json::array({"DeepseekV4ForCausalLM"});
  root["model_type"] = "deepseek_v4";
  root["attention_bias"] = false;
  root["bos_token_id"] = config.bos_token_id;
  root["eos_token_id"] = config.eos_token_id;
  if (config.expert_format != config.linear_format) {
    root["expert_dtype"] = to_string(config.expert_format);
  }
  root["hc_eps"] = config.hc_eps;
  root["hc_mult"] = config.hc_mult;
  root["hc_sinkhorn_iters"] = config.hc_sinkhorn_iters;
  root["head_dim"] = config.head_dim;
  root["hidden_act"] = "silu";
  root["hidden_size"] = config.hidden_size;
  root["index_head_dim"] = config.index_head_dim;
  root["index_n_heads"] = config.index_n_heads;
  root["index_topk"] = config.index_topk;
  root["max_position_embeddings"] = config.max_position_embeddings;
  root["moe_intermediate_size"] = config.moe_intermediate_size;
  root["n_routed_experts"] = config.n_routed_experts;
  root["n_shared_experts"] = config.n_shared_experts;
  root["norm_topk_prob"] = config.norm_topk_prob;
  root["num_attention_heads"] = config.num_attention_heads;
  root["num_experts_per_tok"] = config.num_experts_per_tok;
  root["num_hidden_layers"] = config.num_hidden_layers;
  root["num_hash_layers"] = config.num_hash_layers;
  root["num_key_value_heads"] = config.num_key_value_heads;
  root["num_nextn_predict_layers"] = config.num_nextn_predict_layers;
  root["o_groups"] = config.o_groups;
  root["o_lora_rank"] = config.o_lora_rank;
  root["q_lora_rank"] = config.q_lora_rank;
  root["qk_rope_head_dim"] = config.qk_rope_head_dim;
  if (config.linear_format == WeightFormat::kFP8) {
    root["quantization_config"] = {{"activation_scheme", "dynamic"},
                                   {"fmt", "e4m3"},
                                   {"quant_method", "fp8"},
                                   {"scale_fmt", "ue8m0"},
                                   {"weight_block_size", {128, 128}}};
  }
  root["rms_norm_eps"] = config.rms_norm_eps;
  if (config.rope_scaling.enabled) {
    root["rope_scaling"] = {
        {"beta_fast", config.rope_scaling.beta_fast},
        {"beta_slow", config.rope_scaling.beta_slow},
        {"factor", config.rope_scaling.factor},
        {"original_max_position_embeddings", config.rope_scaling.original_max_position_embeddings},
        {"type", "yarn"}};
  }
  root["rope_theta"] = config.rope_theta;
  root["routed_scaling_factor"] = config.routed_scaling_factor;
  root["scoring_func"] = to_string(config.scoring_func);
  root["sliding_window"] = config.sliding_window;
  root["swiglu_limit"] = config.swiglu_limit;
  root["tie_word_embeddings"] = false;
  root["torch_dtype"] = "bfloat16";
  root["vocab_size"] = config.vocab_size;
  root["compress_rope_theta"] = config.compress_rope_theta;
  root["compress_ratios"] = config.compress_ratios;
  return root.dump(2) + "\n";
}

}  // namespace longctx

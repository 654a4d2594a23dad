#include "model/param_specs.h"

#include "longctx/error.h"

namespace longctx {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

class SpecList {
 public:
  explicit SpecList(const ModelConfig& config) : config_(config) {}

  void linear(const std::string& name, WeightFormat format, int64_t out, int64_t in,
              bool any_format = false) {
    specs_.push_back({name, ParamKind::kLinear, format, {out, in}, any_format});
  }
  void tensor(const std::string& name, ParamKind kind, std::vector<int64_t> shape) {
    specs_.push_back({name, kind, WeightFormat::kBF16, std::move(shape), false});
  }

  void hyper_connection(const std::string& prefix, const std::string& which) {
    const int64_t hc = config_.hc_mult;
    const int64_t mix = (2 + hc) * hc;
    tensor(prefix + "hc_" + which + "_fn", ParamKind::kHcFn, {mix, hc * config_.hidden_size});
    tensor(prefix + "hc_" + which + "_base", ParamKind::kHcBase, {mix});
    tensor(prefix + "hc_" + which + "_scale", ParamKind::kHcScale, {3});
  }

  void hc_head(const std::string& prefix) {
    const int64_t hc = config_.hc_mult;
    tensor(prefix + "hc_head_fn", ParamKind::kHcFn, {hc, hc * config_.hidden_size});
    tensor(prefix + "hc_head_base", ParamKind::kHcBase, {hc});
    tensor(prefix + "hc_head_scale", ParamKind::kHcScale, {1});
  }

  void compressor(const std::string& prefix, int ratio, int64_t head_dim) {
    const int64_t width = (ratio == 4 ? 2 : 1) * head_dim;  // overlapping windows double it
    linear(prefix + "wkv", WeightFormat::kBF16, width, config_.hidden_size);
    linear(prefix + "wgate", WeightFormat::kBF16, width, config_.hidden_size);
    tensor(prefix + "ape", ParamKind::kApe, {ratio, width});
    tensor(prefix + "norm.weight", ParamKind::kNorm, {head_dim});
  }

  void block(int64_t layer) {
    const ModelConfig& c = config_;
    const std::string p = layer_prefix(layer, c);
    const WeightFormat lin = c.linear_format;
    const int ratio = c.compress_ratio(layer);
    hyper_connection(p, "attn");
    hyper_connection(p, "ffn");
    tensor(p + "attn_norm.weight", ParamKind::kNorm, {c.hidden_size});
    tensor(p + "ffn_norm.weight", ParamKind::kNorm, {c.hidden_size});
    // Attention.
    const std::string a = p + "attn.";
    linear(a + "wq_a", lin, c.q_lora_rank, c.hidden_size);
    tensor(a + "q_norm.weight", ParamKind::kNorm, {c.q_lora_rank});
    linear(a + "wq_b", lin, c.num_attention_heads * c.head_dim, c.q_lora_rank);
    linear(a + "wkv", lin, c.head_dim, c.hidden_size);
    tensor(a + "kv_norm.weight", ParamKind::kNorm, {c.head_dim});
    linear(a + "wo_a", lin, c.o_groups * c.o_lora_rank,
           c.num_attention_heads * c.head_dim / c.o_groups, /*any_format=*/true);
    linear(a + "wo_b", lin, c.hidden_size, c.o_groups * c.o_lora_rank);
    tensor(a + "attn_sink", ParamKind::kSink, {c.num_attention_heads});
    if (ratio > 0) {
      compressor(a + "compressor.", ratio, c.head_dim);
      if (ModelConfig::ratio_uses_indexer(ratio)) {
        const std::string ix = a + "indexer.";
        linear(ix + "wq_b", lin, c.index_n_heads * c.index_head_dim, c.q_lora_rank);
        linear(ix + "weights_proj", WeightFormat::kBF16, c.index_n_heads, c.hidden_size);
        compressor(ix + "compressor.", ratio, c.index_head_dim);
      }
    }
    // Mixture of experts.
    const std::string f = p + "ffn.";
    linear(f + "gate", WeightFormat::kBF16, c.n_routed_experts, c.hidden_size);
    if (c.is_hash_layer(layer)) {
      tensor(f + "gate.tid2eid", ParamKind::kTid2eid, {c.vocab_size, c.num_experts_per_tok});
    } else {
      tensor(f + "gate.bias", ParamKind::kGateBias, {c.n_routed_experts});
    }
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const std::string ex = f + "experts." + std::to_string(e) + ".";
      linear(ex + "w1", c.expert_format, c.moe_intermediate_size, c.hidden_size);
      linear(ex + "w2", c.expert_format, c.hidden_size, c.moe_intermediate_size);
      linear(ex + "w3", c.expert_format, c.moe_intermediate_size, c.hidden_size);
    }
    if (c.n_shared_experts > 0) {
      const std::string sh = f + "shared_experts.";
      linear(sh + "w1", lin, c.moe_intermediate_size, c.hidden_size);
      linear(sh + "w2", lin, c.hidden_size, c.moe_intermediate_size);
      linear(sh + "w3", lin, c.moe_intermediate_size, c.hidden_size);
    }
  }

  std::vector<ParamSpec> take() { return std::move(specs_); }

 private:
  const ModelConfig& config_;
  std::vector<ParamSpec> specs_;
};

}  // namespace

std::string layer_prefix(int64_t layer, const ModelConfig& config) {
  if (layer < config.num_hidden_layers) return "layers." + std::to_string(layer) + ".";
  return "mtp." + std::to_string(layer - config.num_hidden_layers) + ".";
}

std::vector<ParamSpec> model_param_specs(const ModelConfig& config) {
  SpecList list(config);
  list.tensor("embed.weight", ParamKind::kEmbedding, {config.vocab_size, config.hidden_size});
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) list.block(layer);
  list.tensor("norm.weight", ParamKind::kNorm, {config.hidden_size});
  list.linear("head", WeightFormat::kBF16, config.vocab_size, config.hidden_size);
  list.hc_head("");
  for (int64_t k = 0; k < config.num_nextn_predict_layers; ++k) {
    const int64_t layer = config.num_hidden_layers + k;
    const std::string p = layer_prefix(layer, config);
    list.block(layer);
    list.linear(p + "e_proj", config.linear_format, config.hidden_size, config.hidden_size);
    list.linear(p + "h_proj", config.linear_format, config.hidden_size, config.hidden_size);
    list.tensor(p + "enorm.weight", ParamKind::kNorm, {config.hidden_size});
    list.tensor(p + "hnorm.weight", ParamKind::kNorm, {config.hidden_size});
    list.tensor(p + "norm.weight", ParamKind::kNorm, {config.hidden_size});
    list.hc_head(p);
  }
  return list.take();
}

std::vector<StoredTensorSpec> stored_tensors(const ParamSpec& spec, WeightFormat format) {
  switch (spec.kind) {
    case ParamKind::kLinear: {
      const int64_t out = spec.shape[0];
      const int64_t in = spec.shape[1];
      switch (format) {
        case WeightFormat::kBF16:
          return {{spec.name + ".weight", DType::kBF16, {out, in}}};
        case WeightFormat::kFP8:
          return {{spec.name + ".weight", DType::kF8E4M3, {out, in}},
                  {spec.name + ".scale", DType::kF8E8M0, {ceil_div(out, 128), ceil_div(in, 128)}}};
        case WeightFormat::kFP4:
          if (in % 32 != 0) fail(spec.name, ": fp4 weights need an input size divisible by 32, got ", in);
          return {{spec.name + ".weight", DType::kI8, {out, in / 2}},
                  {spec.name + ".scale", DType::kF8E8M0, {out, in / 32}}};
      }
      break;
    }
    case ParamKind::kEmbedding:
    case ParamKind::kNorm:
      return {{spec.name, DType::kBF16, spec.shape}};
    case ParamKind::kTid2eid:
      return {{spec.name, DType::kI64, spec.shape}};
    case ParamKind::kApe:
    case ParamKind::kSink:
    case ParamKind::kGateBias:
    case ParamKind::kHcFn:
    case ParamKind::kHcBase:
    case ParamKind::kHcScale:
      return {{spec.name, DType::kF32, spec.shape}};
  }
  fail("unknown parameter kind for ", spec.name);
}

}  // namespace longctx

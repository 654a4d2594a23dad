#include "model/weight_assembly.h"

#include "model/param_specs.h"

namespace longctx {
namespace {

HyperConnectionWeights hyper_connection(ParamSource& source, const std::string& prefix,
                                        const std::string& which) {
  return {source.floats(prefix + "hc_" + which + "_fn"),
          source.floats(prefix + "hc_" + which + "_base"),
          source.floats(prefix + "hc_" + which + "_scale")};
}

CompressorWeights compressor(ParamSource& source, const std::string& prefix, int ratio,
                             int64_t head_dim) {
  CompressorWeights c;
  c.ratio = ratio;
  c.overlap = ratio == 4;
  c.head_dim = head_dim;
  c.wkv = source.linear(prefix + "wkv");
  c.wgate = source.linear(prefix + "wgate");
  c.ape = source.floats(prefix + "ape");
  c.norm = source.floats(prefix + "norm.weight");
  return c;
}

ExpertWeights expert(ParamSource& source, const std::string& prefix) {
  return {source.linear(prefix + "w1"), source.linear(prefix + "w2"), source.linear(prefix + "w3")};
}

BlockWeights block(ParamSource& source, int64_t layer, const ModelConfig& config) {
  const std::string p = layer_prefix(layer, config);
  BlockWeights b;
  b.layer = layer;
  b.ratio = config.compress_ratio(layer);
  b.hash_routing = config.is_hash_layer(layer);
  b.hc_attn = hyper_connection(source, p, "attn");
  b.hc_ffn = hyper_connection(source, p, "ffn");
  b.attn_norm = source.floats(p + "attn_norm.weight");
  b.ffn_norm = source.floats(p + "ffn_norm.weight");
  const std::string a = p + "attn.";
  AttentionWeights& attn = b.attn;
  attn.wq_a = source.linear(a + "wq_a");
  attn.q_norm = source.floats(a + "q_norm.weight");
  attn.wq_b = source.linear(a + "wq_b");
  attn.wkv = source.linear(a + "wkv");
  attn.kv_norm = source.floats(a + "kv_norm.weight");
  attn.wo_a = source.linear(a + "wo_a", /*quantize_if_stored_quantized=*/false);
  attn.wo_b = source.linear(a + "wo_b");
  attn.attn_sink = source.floats(a + "attn_sink");
  if (b.ratio > 0) {
    attn.compressor = compressor(source, a + "compressor.", b.ratio, config.head_dim);
    if (ModelConfig::ratio_uses_indexer(b.ratio)) {
      IndexerWeights indexer;
      indexer.wq_b = source.linear(a + "indexer.wq_b");
      indexer.weights_proj = source.linear(a + "indexer.weights_proj");
      indexer.compressor =
          compressor(source, a + "indexer.compressor.", b.ratio, config.index_head_dim);
      attn.indexer = std::move(indexer);
    }
  }
  const std::string f = p + "ffn.";
  b.ffn.gate = source.linear(f + "gate");
  if (b.hash_routing) {
    b.ffn.tid2eid = source.expert_table(f + "gate.tid2eid", config.n_routed_experts);
  } else {
    b.ffn.gate_bias = source.floats(f + "gate.bias");
  }
  for (int64_t e = 0; e < config.n_routed_experts; ++e) {
    b.ffn.experts.push_back(expert(source, f + "experts." + std::to_string(e) + "."));
  }
  if (config.n_shared_experts > 0) b.ffn.shared = expert(source, f + "shared_experts.");
  return b;
}

}  // namespace

ModelWeights assemble_model_weights(const ModelConfig& config, ParamSource& source) {
  ModelWeights weights;
  weights.config = config;
  weights.embed = source.linear("embed");
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    weights.layers.push_back(block(source, layer, config));
  }
  weights.norm = source.floats("norm.weight");
  weights.head = source.linear("head");
  weights.hc_head = hyper_connection(source, "", "head");
  for (int64_t k = 0; k < config.num_nextn_predict_layers; ++k) {
    const int64_t layer = config.num_hidden_layers + k;
    const std::string p = layer_prefix(layer, config);
    MtpWeights mtp;
    mtp.block = block(source, layer, config);
    mtp.e_proj = source.linear(p + "e_proj");
    mtp.h_proj = source.linear(p + "h_proj");
    mtp.enorm = source.floats(p + "enorm.weight");
    mtp.hnorm = source.floats(p + "hnorm.weight");
    mtp.norm = source.floats(p + "norm.weight");
    mtp.hc_head = hyper_connection(source, p, "head");
    weights.mtp.push_back(std::move(mtp));
  }
  return weights;
}

}  // namespace longctx

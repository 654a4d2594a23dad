// The V4 parameters bound to a loaded checkpoint. Large matrices stay in their stored format
// inside the memory map (bf16, fp8 with 128x128 block scales, packed fp4 with per-32 scales);
// small vectors (norms, biases, hyper-connection parameters) are copied to fp32.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "longctx/model_config.h"
#include "model/checkpoint.h"

namespace longctx {

struct LinearWeight {
  std::string name;
  WeightFormat format = WeightFormat::kBF16;
  int64_t out = 0;
  int64_t in = 0;
  // BF16 [out, in], F8_E4M3 [out, in] or packed e2m1 [out, in / 2] (low nibble first).
  const uint8_t* weight = nullptr;
  // e8m0 bytes: fp8 [ceil(out/128), ceil(in/128)], fp4 [out, in/32]; null for bf16.
  const uint8_t* scale = nullptr;
  // The reference quantizes activations to fp8 (blocks of 128) before every fp8/fp4 product;
  // wo_a, stored in fp8, is used as a bf16 matrix and so does not.
  bool quantize_activations = false;

  // Decodes row `row` (in values) into out_row, in fp32.
  void decode_row(int64_t row, float* out_row) const;
  // Bytes of the stored weight and scales.
  size_t stored_bytes() const;
};

struct CompressorWeights {
  int ratio = 0;
  bool overlap = false;  // ratio 4: windows of 2*ratio tokens, width 2*head_dim
  int64_t head_dim = 0;
  LinearWeight wkv, wgate;        // [width, hidden], bf16, used in fp32
  std::vector<float> ape;         // [ratio, width]
  std::vector<float> norm;        // [head_dim]
  int64_t width() const { return (overlap ? 2 : 1) * head_dim; }
};

struct IndexerWeights {
  LinearWeight wq_b;          // [heads * head_dim, q_lora_rank]
  LinearWeight weights_proj;  // [heads, hidden]
  CompressorWeights compressor;
};

struct AttentionWeights {
  LinearWeight wq_a, wq_b, wkv, wo_a, wo_b;
  std::vector<float> q_norm, kv_norm, attn_sink;
  std::optional<CompressorWeights> compressor;  // ratio > 0
  std::optional<IndexerWeights> indexer;        // ratio 4
};

struct ExpertWeights {
  LinearWeight w1, w2, w3;  // gate, down, up
};

struct MoeWeights {
  LinearWeight gate;                 // [experts, hidden]
  std::vector<float> gate_bias;      // scored layers
  std::vector<int32_t> tid2eid;      // hash layers: [vocab, topk]
  std::vector<ExpertWeights> experts;
  std::optional<ExpertWeights> shared;
};

struct HyperConnectionWeights {
  std::vector<float> fn;     // [mix, hc * hidden]
  std::vector<float> base;   // [mix]
  std::vector<float> scale;  // [3] for sublayers, [1] for heads
};

struct BlockWeights {
  int64_t layer = 0;
  int ratio = 0;
  bool hash_routing = false;
  HyperConnectionWeights hc_attn, hc_ffn;
  std::vector<float> attn_norm, ffn_norm;
  AttentionWeights attn;
  MoeWeights ffn;
};

struct MtpWeights {
  BlockWeights block;
  LinearWeight e_proj, h_proj;
  std::vector<float> enorm, hnorm, norm;
  HyperConnectionWeights hc_head;
};

struct ModelWeights {
  ModelConfig config;
  LinearWeight embed;  // BF16 [vocab, hidden]; rows are looked up
  std::vector<BlockWeights> layers;
  std::vector<float> norm;
  LinearWeight head;  // BF16 [vocab, hidden]
  HyperConnectionWeights hc_head;
  std::vector<MtpWeights> mtp;
};

// Progress of weight loading: tensors done / total and their bytes.
struct LoadProgress {
  size_t tensors_done = 0;
  size_t tensors_total = 0;
  size_t bytes_done = 0;
  size_t bytes_total = 0;
};
using LoadProgressCallback = void (*)(const LoadProgress&, void* user);

// A checkpoint with its parameters validated and bound. Keeps the memory maps alive.
class LoadedModel {
 public:
  explicit LoadedModel(const std::string& dir, LoadProgressCallback progress = nullptr,
                       void* progress_user = nullptr);

  const ModelConfig& config() const { return weights_.config; }
  const ModelWeights& weights() const { return weights_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }

 private:
  std::unique_ptr<Checkpoint> checkpoint_;
  ModelWeights weights_;
};

}  // namespace longctx

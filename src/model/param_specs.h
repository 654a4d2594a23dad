// The parameters a V4 checkpoint must hold for a given config: names, logical shapes and
// storage formats exactly as released. One list serves the loader (what to validate and bind)
// and the test-model writer (what to generate), so the two cannot drift apart.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/model_config.h"
#include "model/safetensors.h"

namespace longctx {

enum class ParamKind {
  kLinear,     // {name}.weight (+ {name}.scale when fp8/fp4), logical shape [out, in]
  kEmbedding,  // embed.weight, BF16 [vocab, hidden]
  kNorm,       // RMSNorm weight, BF16
  kApe,        // compressor position bias, F32 (BF16 accepted) [ratio, width]
  kSink,       // attention sink logits, F32 [heads]
  kGateBias,   // router bias, F32 [experts]
  kHcFn,       // hyper-connection mixing weights, F32 [mix, hc * hidden]
  kHcBase,     // F32 [mix]
  kHcScale,    // F32 [3] or [1]
  kTid2eid,    // hash routing table, I64 (I32 accepted) [vocab, topk]
};

struct ParamSpec {
  std::string name;  // module path for linears ("layers.0.attn.wq_a"), tensor name otherwise
  ParamKind kind = ParamKind::kNorm;
  WeightFormat format = WeightFormat::kBF16;  // linears only
  std::vector<int64_t> shape;                 // logical shape
  // wo_a ships as fp8 but the reference uses it in bf16; accept either storage.
  bool any_linear_format = false;
};

// One stored tensor of a parameter.
struct StoredTensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

std::string layer_prefix(int64_t layer, const ModelConfig& config);  // "layers.3." or "mtp.0."

std::vector<ParamSpec> model_param_specs(const ModelConfig& config);

// The tensors a parameter occupies when stored in `format` (linears) or its default dtype.
std::vector<StoredTensorSpec> stored_tensors(const ParamSpec& spec, WeightFormat format);

}  // namespace longctx

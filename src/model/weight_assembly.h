// The V4 parameter tree walked once: which named parameters make up each layer, the MoE, the
// hyper-connections and the MTP blocks. Where the parameters come from is a ParamSource: a
// checkpoint on disk (model_weights.cpp), or a generator (benchmarks at full size).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model_weights.h"

namespace longctx {

class ParamSource {
 public:
  virtual ~ParamSource() = default;
  LinearWeight linear(const std::string& name) { return linear(name, true); }
  // A linear named without its ".weight" suffix. Quantized formats simulate fp8 activations
  // unless the layer keeps them (quantize_if_stored_quantized false: wo_a).
  virtual LinearWeight linear(const std::string& name, bool quantize_if_stored_quantized) = 0;
  // A small vector (norms, biases, hyper-connection parameters, sinks) as fp32.
  virtual std::vector<float> floats(const std::string& name) = 0;
  // A hash layer's token -> experts table; entries inside [0, num_experts).
  virtual std::vector<int32_t> expert_table(const std::string& name, int64_t num_experts) = 0;
};

ModelWeights assemble_model_weights(const ModelConfig& config, ParamSource& source);

}  // namespace longctx

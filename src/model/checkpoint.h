// A Hugging Face checkpoint folder: config.json plus one or more safetensors shards, found
// through model.safetensors.index.json when present. Tensor names are normalized to the
// reference module names (no "model." prefix; self_attn -> attn, mlp -> ffn,
// weight_scale_inv -> scale, e_score_correction_bias -> bias).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "longctx/model_config.h"
#include "model/safetensors.h"

namespace longctx {

std::string normalize_tensor_name(const std::string& name);

class Checkpoint {
 public:
  // Opens `dir`: reads config.json, maps and validates every shard. Throws Error.
  explicit Checkpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // The tensor, or an Error saying it is missing.
  const TensorInfo& get(const std::string& name) const;
  // The tensor, checked to have exactly this dtype and shape.
  const TensorInfo& expect(const std::string& name, DType dtype,
                           const std::vector<int64_t>& shape) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  size_t total_bytes() const;

 private:
  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorInfo> tensors_;  // by normalized name
};

}  // namespace longctx

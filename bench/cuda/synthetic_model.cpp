#include "synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "longctx/error.h"
#include "model/param_specs.h"
#include "model/test_model.h"
#include "model/weight_assembly.h"

namespace longctx::bench {
namespace {

uint64_t hash_name(const std::string& name, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (const char c : name)
    h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

// Parameters by the released names, shapes and formats, without checkpoint data.
class SkeletonSource final : public ParamSource {
 public:
  SkeletonSource(const ModelConfig& config, uint64_t seed) : seed_(seed) {
    for (ParamSpec& spec : model_param_specs(config))
      specs_.emplace(spec.name, std::move(spec));
  }

  // A linear with its released format and shape and no data.
  LinearWeight linear(const std::string& name, bool quantize_if_stored_quantized) override {
    const ParamSpec& spec = find(name.rfind("embed", 0) == 0 ? "embed.weight" : name);
    LinearWeight w;
    w.name = name;
    w.format = spec.kind == ParamKind::kEmbedding ? WeightFormat::kBF16 : spec.format;
    w.out = spec.shape.at(0);
    w.in = spec.shape.at(1);
    w.quantize_activations = quantize_if_stored_quantized && w.format != WeightFormat::kBF16;
    return w;
  }

  std::vector<float> floats(const std::string& name) override {
    const ParamSpec& spec = find(name);
    const int64_t count =
        std::accumulate(spec.shape.begin(), spec.shape.end(), int64_t{1}, std::multiplies<>());
    const int64_t cols = spec.shape.size() > 1 ? spec.shape[1] : 1;
    float mean = 0.0f, stddev = 1.0f;
    switch (spec.kind) {
      case ParamKind::kNorm:
        mean = 1.0f;
        stddev = 0.1f;
        break;
      case ParamKind::kGateBias:
        stddev = 0.1f;
        break;
      case ParamKind::kHcFn:
        stddev = 1.0f / std::sqrt(static_cast<float>(cols));
        break;
      case ParamKind::kHcScale:
        mean = 1.0f;
        stddev = 0.25f;
        break;
      default:
        break;
    }
    std::mt19937_64 random(hash_name(name, seed_));
    std::normal_distribution<float> normal(mean, stddev);
    std::vector<float> values(static_cast<size_t>(count));
    for (float& v : values)
      v = normal(random);
    return values;
  }

  // Each token id routes to num_experts_per_tok distinct experts.
  std::vector<int32_t> expert_table(const std::string& name, int64_t num_experts) override {
    const ParamSpec& spec = find(name);
    const int64_t rows = spec.shape.at(0), cols = spec.shape.at(1);
    std::vector<int32_t> table(static_cast<size_t>(rows * cols));
    std::mt19937_64 random(hash_name(name, seed_));
    std::vector<int32_t> pool(static_cast<size_t>(num_experts));
    for (int64_t r = 0; r < rows; ++r) {
      std::iota(pool.begin(), pool.end(), 0);
      for (int64_t c = 0; c < cols; ++c) {
        const size_t pick =
            static_cast<size_t>(c) + random() % (pool.size() - static_cast<size_t>(c));
        std::swap(pool[static_cast<size_t>(c)], pool[pick]);
        table[static_cast<size_t>(r * cols + c)] = pool[static_cast<size_t>(c)];
      }
    }
    return table;
  }

 private:
  const ParamSpec& find(const std::string& name) const {
    const auto it = specs_.find(name);
    if (it == specs_.end()) fail("synthetic weights: the config has no parameter ", name);
    return it->second;
  }

  uint64_t seed_;
  std::map<std::string, ParamSpec> specs_;
};

}  // namespace

ModelConfig synthetic_config(const std::string& preset, int64_t layers, int64_t experts) {
  if (preset != "flash" && preset != "pro")
    fail("--synthetic must be flash or pro, got '", preset, "'");
  ModelConfig c = test_model_preset(preset, layers);
  if (experts > 0) {
    if (experts < c.num_experts_per_tok) {
      fail("--experts ", experts, " is below the ", c.num_experts_per_tok,
           " experts each token uses");
    }
    c.n_routed_experts = std::min(c.n_routed_experts, experts);
  }
  c.validate();
  return c;
}

ModelWeights synthetic_weights(const ModelConfig& config, uint64_t seed) {
  SkeletonSource source(config, seed);
  return assemble_model_weights(config, source);
}

}  // namespace longctx::bench

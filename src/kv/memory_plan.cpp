#include "kv/memory_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "model/param_specs.h"

namespace longctx {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string kind_name(int ratio) {
  if (ratio == 0) return "window";
  return "c" + std::to_string(ratio) + "a";
}

}  // namespace

size_t weight_bytes_on_device(const ModelConfig& config) {
  size_t total = 0;
  for (const ParamSpec& spec : model_param_specs(config)) {
    const bool wo_a = spec.any_linear_format;
    for (const StoredTensorSpec& tensor : stored_tensors(spec, wo_a ? WeightFormat::kBF16 : spec.format)) {
      const int64_t elements = std::accumulate(tensor.shape.begin(), tensor.shape.end(), int64_t{1},
                                               std::multiplies<>());
      total += static_cast<size_t>(elements) * dtype_size(tensor.dtype);
    }
  }
  return total;
}

MemoryPlan plan_memory(const ModelConfig& config, const KvCacheOptions& options, int64_t context,
                       double memory_bytes) {
  const KvLayout layout = make_kv_layout(config, options);
  MemoryPlan plan;
  plan.context = context;
  for (const LayerKvLayout& layer : layout.layers) {
    if (layer.layer >= config.num_hidden_layers) continue;  // MTP: window only, fixed cost
    const std::string kind = kind_name(layer.ratio);
    auto it = std::find_if(plan.kinds.begin(), plan.kinds.end(),
                           [&](const LayerKindCost& k) { return k.kind == kind; });
    if (it == plan.kinds.end()) {
      plan.kinds.push_back({kind, 0, static_cast<double>(layer.compressed_page_bytes) / kKvBlockSize});
      it = plan.kinds.end() - 1;
    }
    ++it->layers;
    plan.bytes_per_token += static_cast<double>(layer.compressed_page_bytes) / kKvBlockSize;
  }
  plan.window_bytes_per_sequence = layout.window_bytes_per_sequence();
  plan.kv_bytes_per_sequence =
      static_cast<double>(context) * plan.bytes_per_token + static_cast<double>(plan.window_bytes_per_sequence);
  plan.weight_bytes = weight_bytes_on_device(config);
  plan.memory_bytes = memory_bytes;
  if (memory_bytes > 0) {
    const double free_bytes = memory_bytes - static_cast<double>(plan.weight_bytes);
    plan.sequences_that_fit =
        free_bytes > 0 ? static_cast<int64_t>(std::floor(free_bytes / plan.kv_bytes_per_sequence)) : 0;
  }
  return plan;
}

std::string format_memory_plan(const MemoryPlan& plan, const KvCacheOptions& options) {
  std::string text;
  char line[256];
  std::snprintf(line, sizeof(line), "KV cache: main entries %s, indexer keys %s\n",
                to_string(options.kv_dtype), to_string(options.indexer_dtype));
  text += line;
  text += "layer kind   layers   bytes/token/layer\n";
  for (const LayerKindCost& kind : plan.kinds) {
    std::snprintf(line, sizeof(line), "%-10s %8lld %19.4g\n", kind.kind.c_str(),
                  static_cast<long long>(kind.layers), kind.bytes_per_token);
    text += line;
  }
  std::snprintf(line, sizeof(line), "bytes per token (all layers): %.6g\n", plan.bytes_per_token);
  text += line;
  std::snprintf(line, sizeof(line), "fixed window cost per sequence: %.2f MiB\n",
                static_cast<double>(plan.window_bytes_per_sequence) / (1024.0 * 1024.0));
  text += line;
  std::snprintf(line, sizeof(line),
                "KV for one sequence of %lld tokens: %.2f GiB of compressed entries + %.2f MiB window "
                "= %.2f GiB\n",
                static_cast<long long>(plan.context),
                static_cast<double>(plan.context) * plan.bytes_per_token / kGiB,
                static_cast<double>(plan.window_bytes_per_sequence) / (1024.0 * 1024.0),
                plan.kv_bytes_per_sequence / kGiB);
  text += line;
  std::snprintf(line, sizeof(line), "weights on the device: %.2f GiB\n", static_cast<double>(plan.weight_bytes) / kGiB);
  text += line;
  if (plan.memory_bytes > 0) {
    std::snprintf(line, sizeof(line), "sequences of %lld tokens that fit in %.1f GiB after the weights: %lld\n",
                  static_cast<long long>(plan.context), plan.memory_bytes / kGiB,
                  static_cast<long long>(plan.sequences_that_fit));
    text += line;
  }
  return text;
}

}  // namespace longctx

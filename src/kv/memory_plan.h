// KV memory arithmetic for a model: bytes per token of each layer kind, the fixed
// per-sequence window cost, and how many sequences of a given length fit next to the weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv/kv_layout.h"

namespace longctx {

struct LayerKindCost {
  std::string kind;         // "window", "c4a", "c128a", ...
  int64_t layers = 0;       // main layers of this kind (MTP blocks counted separately)
  double bytes_per_token = 0;  // per layer, compressed entries only
};

struct MemoryPlan {
  std::vector<LayerKindCost> kinds;
  double bytes_per_token = 0;              // all main layers
  size_t window_bytes_per_sequence = 0;    // two window pages of every layer (MTP included)
  int64_t context = 0;
  double kv_bytes_per_sequence = 0;        // context * bytes_per_token + window cost
  size_t weight_bytes = 0;
  double memory_bytes = 0;                 // usable device memory (0: not given)
  int64_t sequences_that_fit = 0;
};

// Bytes the weights take on the device in their stored formats (wo_a expanded to bf16).
size_t weight_bytes_on_device(const ModelConfig& config);

MemoryPlan plan_memory(const ModelConfig& config, const KvCacheOptions& options, int64_t context,
                       double memory_bytes);

std::string format_memory_plan(const MemoryPlan& plan, const KvCacheOptions& options);

}  // namespace longctx

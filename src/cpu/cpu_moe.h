// The mixture-of-experts sublayer on the CPU.
//
// Router scores = scoring(gate x) in fp32. Scored layers pick the top-k experts by
// score + bias; hash layers take tid2eid[token]. Routing weights are the unbiased scores of the
// chosen experts, normalized to sum 1 (sigmoid-like scorings), times routed_scaling_factor.
// Expert: w2(silu(min(w1 x, L)) * clamp(w3 x, -L, L) * weight). Output: the routed experts
// summed in ascending expert order, then the shared expert.
#pragma once

#include <cstdint>
#include <span>

#include "longctx/model_config.h"
#include "model/model_weights.h"

namespace longctx::cpu {

struct Routing {
  std::vector<int32_t> experts;  // [rows, k]
  std::vector<float> weights;    // [rows, k]
};

// x [rows, hidden] (normed), tokens [rows] -> routing of every row.
Routing route(const MoeWeights& w, const ModelConfig& config, const float* x,
              std::span<const int32_t> tokens);

// x [rows, hidden] -> out [rows, hidden].
void moe_sublayer(const MoeWeights& w, const ModelConfig& config, const float* x,
                  std::span<const int32_t> tokens, float* out);

}  // namespace longctx::cpu

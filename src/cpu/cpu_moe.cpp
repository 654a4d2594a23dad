#include "cpu/cpu_moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "cpu/cpu_linear.h"
#include "cpu/cpu_ops.h"

namespace longctx::cpu {
namespace {

void score(ScoringFunc func, float* logits, int64_t n) {
  switch (func) {
    case ScoringFunc::kSqrtSoftplus:
      for (int64_t i = 0; i < n; ++i) logits[i] = std::sqrt(softplus(logits[i]));
      return;
    case ScoringFunc::kSigmoid:
      for (int64_t i = 0; i < n; ++i) logits[i] = sigmoid(logits[i]);
      return;
    case ScoringFunc::kSoftmax: {
      const float max_logit = *std::max_element(logits, logits + n);
      float total = 0.0f;
      for (int64_t i = 0; i < n; ++i) total += (logits[i] = std::exp(logits[i] - max_logit));
      for (int64_t i = 0; i < n; ++i) logits[i] /= total;
      return;
    }
  }
}

// One expert over `rows` gathered rows: out = w2(silu(min(w1 x, L)) * clamp(w3 x, +-L) * weight).
void expert_forward(const ExpertWeights& e, const ModelConfig& config, const float* x, int64_t rows,
                    const float* row_weights, float* out) {
  const int64_t inter = e.w1.out;
  std::vector<float> gate(static_cast<size_t>(rows * inter));
  std::vector<float> up(static_cast<size_t>(rows * inter));
  linear(e.w1, x, rows, gate.data());
  linear(e.w3, x, rows, up.data());
  const float limit = static_cast<float>(config.swiglu_limit);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < inter; ++i) {
      float g = gate[static_cast<size_t>(r * inter + i)];
      float u = up[static_cast<size_t>(r * inter + i)];
      if (limit > 0.0f) {
        g = std::min(g, limit);
        u = std::clamp(u, -limit, limit);
      }
      float h = silu(g) * u;
      if (row_weights != nullptr) h = row_weights[r] * h;
      gate[static_cast<size_t>(r * inter + i)] = h;
    }
  }
  linear(e.w2, gate.data(), rows, out);
}

}  // namespace

Routing route(const MoeWeights& w, const ModelConfig& config, const float* x,
              std::span<const int32_t> tokens) {
  const int64_t rows = static_cast<int64_t>(tokens.size());
  const int64_t experts = config.n_routed_experts;
  const int64_t k = config.num_experts_per_tok;
  std::vector<float> scores(static_cast<size_t>(rows * experts));
  linear(w.gate, x, rows, scores.data());
  Routing routing;
  routing.experts.resize(static_cast<size_t>(rows * k));
  routing.weights.resize(static_cast<size_t>(rows * k));
  std::vector<int32_t> order(static_cast<size_t>(experts));
  std::vector<float> biased(static_cast<size_t>(experts));
  for (int64_t r = 0; r < rows; ++r) {
    float* row_scores = scores.data() + r * experts;
    score(config.scoring_func, row_scores, experts);
    int32_t* chosen = routing.experts.data() + r * k;
    if (!w.tid2eid.empty()) {
      std::copy_n(w.tid2eid.data() + static_cast<size_t>(tokens[static_cast<size_t>(r)]) * static_cast<size_t>(k), k, chosen);
    } else {
      // The bias steers the choice only; ties go to the lower expert id.
      for (int64_t e = 0; e < experts; ++e) {
        biased[static_cast<size_t>(e)] = row_scores[e] + (w.gate_bias.empty() ? 0.0f : w.gate_bias[static_cast<size_t>(e)]);
      }
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        const float sa = biased[static_cast<size_t>(a)];
        const float sb = biased[static_cast<size_t>(b)];
        return sa != sb ? sa > sb : a < b;
      });
      std::copy_n(order.begin(), k, chosen);
    }
    float* weights = routing.weights.data() + r * k;
    float total = 0.0f;
    for (int64_t j = 0; j < k; ++j) total += (weights[j] = row_scores[chosen[j]]);
    const bool normalize = config.scoring_func != ScoringFunc::kSoftmax && config.norm_topk_prob;
    for (int64_t j = 0; j < k; ++j) {
      if (normalize) weights[j] /= total;
      weights[j] *= static_cast<float>(config.routed_scaling_factor);
    }
  }
  return routing;
}

void moe_sublayer(const MoeWeights& w, const ModelConfig& config, const float* x,
                  std::span<const int32_t> tokens, float* out) {
  const int64_t rows = static_cast<int64_t>(tokens.size());
  const int64_t hidden = config.hidden_size;
  const int64_t k = config.num_experts_per_tok;
  const Routing routing = route(w, config, x, tokens);
  std::fill(out, out + rows * hidden, 0.0f);

  // Experts in ascending id, each over the rows that chose it, so every row sums its experts
  // in the same order whatever else is in the batch.
  std::vector<float> gathered, weights, expert_out;
  std::vector<int64_t> members;
  for (int64_t e = 0; e < config.n_routed_experts; ++e) {
    members.clear();
    weights.clear();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < k; ++j) {
        if (routing.experts[static_cast<size_t>(r * k + j)] == e) {
          members.push_back(r);
          weights.push_back(routing.weights[static_cast<size_t>(r * k + j)]);
        }
      }
    }
    if (members.empty()) continue;
    const int64_t count = static_cast<int64_t>(members.size());
    gathered.resize(static_cast<size_t>(count * hidden));
    for (int64_t m = 0; m < count; ++m) {
      std::copy_n(x + members[static_cast<size_t>(m)] * hidden, hidden, gathered.data() + m * hidden);
    }
    expert_out.resize(static_cast<size_t>(count * hidden));
    expert_forward(w.experts[static_cast<size_t>(e)], config, gathered.data(), count, weights.data(),
                   expert_out.data());
    for (int64_t m = 0; m < count; ++m) {
      float* row = out + members[static_cast<size_t>(m)] * hidden;
      const float* add = expert_out.data() + m * hidden;
      for (int64_t i = 0; i < hidden; ++i) row[i] += add[i];
    }
  }
  if (w.shared) {
    expert_out.resize(static_cast<size_t>(rows * hidden));
    expert_forward(*w.shared, config, x, rows, nullptr, expert_out.data());
    for (int64_t i = 0; i < rows * hidden; ++i) out[i] += expert_out[static_cast<size_t>(i)];
  }
}

}  // namespace longctx::cpu

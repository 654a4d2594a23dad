#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

namespace longctx {
namespace {

// log-softmax of the raw logits, in double.
std::vector<double> log_softmax(std::span<const float> logits) {
  const double top = *std::max_element(logits.begin(), logits.end());
  double total = 0;
  for (const float v : logits) total += std::exp(static_cast<double>(v) - top);
  const double log_total = top + std::log(total);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<double>(logits[i]) - log_total;
  return out;
}

TokenLogprob logprob_of(const std::vector<double>& log_probs, int32_t token, int64_t top) {
  TokenLogprob result;
  result.token = token;
  result.logprob = static_cast<float>(log_probs[static_cast<size_t>(token)]);
  if (top > 0) {
    std::vector<int32_t> ids(log_probs.size());
    std::iota(ids.begin(), ids.end(), 0);
    const auto k = std::min<size_t>(static_cast<size_t>(top), ids.size());
    std::partial_sort(ids.begin(), ids.begin() + static_cast<long>(k), ids.end(), [&](int32_t a, int32_t b) {
      const double pa = log_probs[static_cast<size_t>(a)];
      const double pb = log_probs[static_cast<size_t>(b)];
      return pa != pb ? pa > pb : a < b;
    });
    for (size_t i = 0; i < k; ++i) {
      result.top.push_back({ids[i], static_cast<float>(log_probs[static_cast<size_t>(ids[i])])});
    }
  }
  return result;
}

}  // namespace

double uniform_at(uint64_t seed, int64_t stream, int64_t position) {
  return sampling_uniform(seed, stream, position);
}

TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int64_t top) {
  return logprob_of(log_softmax(logits), token, top);
}

std::vector<PenaltyEntry> PenaltyState::entries(const SamplingParams& params, std::optional<int32_t> extra_output) const {
  std::map<int32_t, int32_t> counts;
  if (params.repetition_penalty != 1.0) {
    for (const int32_t token : prompt_tokens) counts.emplace(token, 0);
  }
  for (const auto& [token, count] : output_counts) counts[token] += count;
  if (extra_output) ++counts[*extra_output];
  std::vector<PenaltyEntry> out;
  out.reserve(counts.size());
  for (const auto& [token, count] : counts) out.push_back({token, count});
  return out;
}

void PenaltyState::init(std::span<const int32_t> prompt, int64_t vocab_size, const SamplingParams& params) {
  output_counts.clear();
  in_prompt.clear();
  prompt_tokens.clear();
  if (params.repetition_penalty != 1.0) {
    in_prompt.assign(static_cast<size_t>(vocab_size), 0);
    for (const int32_t token : prompt) {
      uint8_t& seen = in_prompt[static_cast<size_t>(token)];
      if (!seen) prompt_tokens.push_back(token);
      seen = 1;
    }
  }
}

SampleResult sample_token(std::span<const float> logits, const SamplingParams& params,
                          const PenaltyState& penalties, uint64_t seed, int64_t sequence_index,
                          int64_t output_position, std::span<const int32_t> banned) {
  const size_t vocab = logits.size();
  std::vector<double> scores(logits.begin(), logits.end());
  // Penalties.
  if (params.repetition_penalty != 1.0) {
    for (size_t i = 0; i < vocab; ++i) {
      const bool seen = (!penalties.in_prompt.empty() && penalties.in_prompt[i]) ||
                        penalties.output_counts.count(static_cast<int32_t>(i));
      if (seen) scores[i] = scores[i] > 0 ? scores[i] / params.repetition_penalty : scores[i] * params.repetition_penalty;
    }
  }
  for (const auto& [token, count] : penalties.output_counts) {
    scores[static_cast<size_t>(token)] -= params.frequency_penalty * count + params.presence_penalty;
  }
  const double minus_infinity = -std::numeric_limits<double>::infinity();
  for (const int32_t token : banned) scores[static_cast<size_t>(token)] = minus_infinity;

  SampleResult result;
  if (params.temperature == 0.0) {
    // Greedy: the highest score, the lowest id on ties.
    result.token = static_cast<int32_t>(std::max_element(scores.begin(), scores.end()) - scores.begin());
  } else {
    for (double& s : scores) s /= params.temperature;
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return scores[static_cast<size_t>(a)] > scores[static_cast<size_t>(b)];
    });
    size_t keep = vocab;
    if (params.top_k > 0) keep = std::min(keep, static_cast<size_t>(params.top_k));
    const double top = scores[static_cast<size_t>(order[0])];
    std::vector<double> probs(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += (probs[i] = sampling_exp(scores[static_cast<size_t>(order[i])] - top));
    for (double& p : probs) p /= total;
    // top-p: the smallest prefix of the sorted tokens whose mass reaches top_p.
    if (params.top_p < 1.0) {
      double mass = 0;
      size_t cut = 0;
      while (cut < keep) {
        mass += probs[cut++];
        if (mass >= params.top_p) break;
      }
      keep = std::max<size_t>(cut, 1);
    }
    // min-p: drop tokens below min_p times the most likely one.
    if (params.min_p > 0.0) {
      const double floor = params.min_p * probs[0];
      size_t cut = 1;
      while (cut < keep && probs[cut] >= floor) ++cut;
      keep = cut;
    }
    double kept_mass = 0;
    for (size_t i = 0; i < keep; ++i) kept_mass += probs[i];
    const double draw = uniform_at(seed, sequence_index, output_position) * kept_mass;
    double cumulative = 0;
    result.token = order[keep - 1];
    for (size_t i = 0; i < keep; ++i) {
      cumulative += probs[i];
      if (draw < cumulative) {
        result.token = order[i];
        break;
      }
    }
  }
  if (params.logprobs >= 0) result.logprob = logprob_of(log_softmax(logits), result.token, params.logprobs);
  return result;
}

}  // namespace longctx

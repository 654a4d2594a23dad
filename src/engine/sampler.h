// Turns one row of logits into the next token of a sequence.
//
// Order of operations (vLLM's): repetition penalty over prompt and output tokens, presence
// and frequency penalties over output tokens, temperature, then the top-k, top-p and min-p
// filters, then a draw. The draw uses a counter-based random stream keyed by the request's
// seed, the sequence index and the output position, so a request gives the same tokens
// whatever else is in the batch. Logprobs are those of the raw model distribution.
//
// A backend that samples on its device (Backend::supports_sampling) draws the same tokens: the
// exponential and the random stream come from backend/sampling.h, shared by both.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "backend/sampling.h"
#include "longctx/engine.h"

namespace longctx {

// Token counts a sequence's penalties need.
struct PenaltyState {
  std::unordered_map<int32_t, int32_t> output_counts;
  std::vector<uint8_t> in_prompt;  // by token id; empty when no repetition penalty applies
  std::vector<int32_t> prompt_tokens;  // the distinct ids of in_prompt

  void init(std::span<const int32_t> prompt, int64_t vocab_size, const SamplingParams& params);
  void add_output(int32_t token) { ++output_counts[token]; }
  // The tokens the penalties act on, as a device sampler takes them, by id; `extra_output`
  // counts as one more output token (a draft that is verified in the same step).
  std::vector<PenaltyEntry> entries(const SamplingParams& params, std::optional<int32_t> extra_output = {}) const;
};

struct SampleResult {
  int32_t token = 0;
  TokenLogprob logprob;  // filled when params.logprobs >= 0
};

// `banned` ids (e.g. EOS before min_tokens) get probability zero.
SampleResult sample_token(std::span<const float> logits, const SamplingParams& params,
                          const PenaltyState& penalties, uint64_t seed, int64_t sequence_index,
                          int64_t output_position, std::span<const int32_t> banned = {});

// A uniform double in [0, 1) from (seed, stream, position): splitmix64 over their mix.
double uniform_at(uint64_t seed, int64_t stream, int64_t position);

// The logprob part of sample_token: `token`'s log-probability under the raw logits and the
// `top` most likely tokens (none when top <= 0).
TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int64_t top);

}  // namespace longctx

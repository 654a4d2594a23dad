#include <cmath>

#include "longctx/engine.h"

namespace longctx {

void SamplingParams::validate(int64_t prompt_tokens, int64_t max_model_len, int64_t vocab_size) const {
  if (!std::isfinite(temperature) || temperature < 0) fail("temperature must be >= 0, got ", temperature);
  if (!(top_p > 0 && top_p <= 1)) fail("top_p must be in (0, 1], got ", top_p);
  if (top_k < -1) fail("top_k must be -1 (off) or >= 0, got ", top_k);
  if (!(min_p >= 0 && min_p <= 1)) fail("min_p must be in [0, 1], got ", min_p);
  if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty)) {
    fail("repetition_penalty must be > 0, got ", repetition_penalty);
  }
  if (!(presence_penalty >= -2 && presence_penalty <= 2)) fail("presence_penalty must be in [-2, 2], got ", presence_penalty);
  if (!(frequency_penalty >= -2 && frequency_penalty <= 2)) {
    fail("frequency_penalty must be in [-2, 2], got ", frequency_penalty);
  }
  if (max_tokens < 1) fail("max_tokens must be >= 1, got ", max_tokens);
  if (min_tokens < 0 || min_tokens > max_tokens) fail("min_tokens must be in [0, max_tokens], got ", min_tokens);
  if (prompt_tokens < 1) fail("the prompt is empty");
  if (prompt_tokens + max_tokens > max_model_len) {
    fail("the prompt (", prompt_tokens, " tokens) plus max_tokens (", max_tokens,
         ") exceeds the maximum context length of ", max_model_len, " tokens");
  }
  for (const int32_t id : stop_token_ids) {
    if (id < 0 || id >= vocab_size) fail("stop_token_ids entry ", id, " is outside the vocabulary");
  }
  if (stop.size() > 16) fail("at most 16 stop strings are allowed, got ", stop.size());
  for (const std::string& s : stop) {
    if (s.empty()) fail("stop strings must not be empty");
    if (s.size() > 1024) fail("stop strings must be at most 1024 bytes");
  }
  if (logprobs < -1 || logprobs > 20) fail("logprobs must be between 0 and 20, got ", logprobs);
  if (n < 1 || n > 16) fail("n must be between 1 and 16, got ", n);
}

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "?";
}

}  // namespace longctx

// Runs one sequence through a backend step by step, managing its KV pages: the building block
// of the token-id CLI commands (logits, generate) and of tests that compare prefill with
// decode.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "kv/kv_cache_manager.h"

namespace longctx {

class SequenceRunner {
 public:
  SequenceRunner(Backend& backend, KvCacheManager& kv);
  ~SequenceRunner();
  SequenceRunner(const SequenceRunner&) = delete;
  SequenceRunner& operator=(const SequenceRunner&) = delete;

  // Reuses the longest cached prefix of `prompt`; returns the number of cached tokens.
  int64_t match_prefix(std::span<const int32_t> prompt);
  // Runs the next positions with `tokens`; returns logits of the last num_logits positions.
  // The step stays open (for run_mtp) until commit().
  const ForwardOutput& run(std::span<const int32_t> tokens, int64_t num_logits,
                           bool return_hidden = false);
  // Runs MTP block `mtp_index` over the positions of the open step: next_tokens[i] is the
  // token after position i of the step, hidden the main model's streams of those positions.
  const ForwardOutput& run_mtp(std::span<const int32_t> next_tokens, std::span<const float> hidden,
                               int64_t num_logits, int64_t mtp_index = 0);
  void commit();

  int64_t position() const { return position_; }
  KvCacheManager::SequenceId id() const { return id_; }

 private:
  Backend& backend_;
  KvCacheManager& kv_;
  KvCacheManager::SequenceId id_;
  int64_t position_ = 0;
  std::vector<int32_t> open_tokens_;
  ForwardOutput output_;
};

}  // namespace longctx

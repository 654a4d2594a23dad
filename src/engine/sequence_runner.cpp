#include "engine/sequence_runner.h"

#include "longctx/error.h"

namespace longctx {

SequenceRunner::SequenceRunner(Backend& backend, KvCacheManager& kv)
    : backend_(backend), kv_(kv), id_(kv.add_sequence()) {}

SequenceRunner::~SequenceRunner() { kv_.free_sequence(id_); }

int64_t SequenceRunner::match_prefix(std::span<const int32_t> prompt) {
  position_ = kv_.match_prefix(id_, prompt);
  return position_;
}

const ForwardOutput& SequenceRunner::run(std::span<const int32_t> tokens, int64_t num_logits,
                                         bool return_hidden) {
  if (!open_tokens_.empty()) fail("sequence runner: commit the previous step first");
  const int64_t end = position_ + static_cast<int64_t>(tokens.size());
  if (!kv_.reserve(id_, end)) fail("KV cache is full: cannot hold ", end, " positions");
  ForwardBatch batch;
  batch.chunks.push_back({tokens, position_, &kv_.tables(id_), num_logits});
  batch.return_hidden = return_hidden;
  backend_.forward(batch, &output_);
  open_tokens_.assign(tokens.begin(), tokens.end());
  return output_;
}

const ForwardOutput& SequenceRunner::run_mtp(std::span<const int32_t> next_tokens,
                                             std::span<const float> hidden, int64_t num_logits,
                                             int64_t mtp_index) {
  if (open_tokens_.empty()) fail("sequence runner: run_mtp needs an open step");
  const MtpChunk chunk{next_tokens, hidden, position_, &kv_.tables(id_), num_logits};
  backend_.forward_mtp(std::span<const MtpChunk>(&chunk, 1), mtp_index, &output_);
  return output_;
}

void SequenceRunner::commit() {
  kv_.commit(id_, open_tokens_);
  position_ += static_cast<int64_t>(open_tokens_.size());
  open_tokens_.clear();
}

}  // namespace longctx

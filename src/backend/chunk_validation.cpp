#include "backend/chunk_validation.h"

#include <algorithm>

#include "longctx/error.h"

namespace longctx {

void validate_chunk(const ModelConfig& config, const KvLayout& layout,
                    std::span<const int32_t> tokens, int64_t start_pos, const BlockTables* blocks,
                    int64_t num_logits, size_t index) {
  const auto where = [&] { return str_cat("chunk ", index, ": "); };
  if (tokens.empty()) fail(where(), "no tokens");
  if (blocks == nullptr) fail(where(), "no block tables");
  if (start_pos < 0) fail(where(), "negative start position");
  const int64_t end = start_pos + static_cast<int64_t>(tokens.size());
  if (end > config.max_position_embeddings) {
    fail(where(), "positions up to ", end, " exceed max_position_embeddings ",
         config.max_position_embeddings);
  }
  if (num_logits < 0 || num_logits > static_cast<int64_t>(tokens.size())) {
    fail(where(), "num_logits ", num_logits, " outside [0, ", tokens.size(), "]");
  }
  for (const int32_t token : tokens) {
    if (token < 0 || token >= config.vocab_size) {
      fail(where(), "token id ", token, " outside the vocabulary [0, ", config.vocab_size, ")");
    }
  }
  const int64_t last_block = (end - 1) / kKvBlockSize;
  const int64_t first_window_block =
      std::max<int64_t>(0, start_pos - std::max<int64_t>(config.sliding_window - 1, 1)) / kKvBlockSize;
  for (int64_t b = first_window_block; b <= last_block; ++b) {
    if (b >= static_cast<int64_t>(blocks->window.size()) || blocks->window[static_cast<size_t>(b)] == kNoPage) {
      fail(where(), "no window page for block ", b);
    }
  }
  if (blocks->compressed.size() != layout.compressed_ratios.size()) {
    fail(where(), "block tables have ", blocks->compressed.size(), " compressed pools, expected ",
         layout.compressed_ratios.size());
  }
  for (const auto& table : blocks->compressed) {
    if (static_cast<int64_t>(table.size()) <= last_block) fail(where(), "no compressed page for block ", last_block);
    for (int64_t b = 0; b <= last_block; ++b) {
      if (table[static_cast<size_t>(b)] == kNoPage) fail(where(), "no compressed page for block ", b);
    }
  }
}


}  // namespace longctx

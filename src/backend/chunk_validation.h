// Checks every backend runs on a step's chunks before any KV is touched, so that a bad batch is
// an error naming the chunk, never an out-of-bounds page access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kv/block_tables.h"
#include "kv/kv_layout.h"
#include "longctx/model_config.h"

namespace longctx {

// Token ids inside the vocabulary, positions inside the model's limit, num_logits inside the
// chunk, and pages present for every block the chunk reads or writes. `index` names the chunk.
void validate_chunk(const ModelConfig& config, const KvLayout& layout,
                    std::span<const int32_t> tokens, int64_t start_pos, const BlockTables* blocks,
                    int64_t num_logits, size_t index);

}  // namespace longctx

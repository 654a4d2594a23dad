// The attention sublayer of one V4 layer on the CPU, for every row of a batch.
//
// Query at position t: q = wq_b(RMSNorm(wq_a x)) per head RMS-normalized and roped; one shared
// key/value vector per token: kv = RMSNorm(wkv x), roped, non-rope dims fp8-simulated. Keys
// seen by t: the raw KV of the window [t - W + 1, t], then (ratio r > 0) compressed entries i
// with (i + 1) r <= t + 1: all of them for r = 128, the lightning indexer's top-k for r = 4.
// Softmax with a per-head sink logit in the denominator, output inverse-roped at t, then the
// grouped low-rank output projection.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cpu/cpu_layer_context.h"

namespace longctx::cpu {

// x [rows, hidden] (already normed) -> out [rows, hidden]. Reads and writes the KV cache of
// the layer through the chunks' block tables.
void attention_sublayer(const LayerContext& ctx, std::span<const ChunkView> chunks,
                        const float* x, int64_t rows, float* out);

// The compressed entries query position `position` attends to, ascending. For ratio 4 these
// are the top index_topk entries by indexer score (ties to the lower index); q_index is the
// query's indexer heads [index_heads, index_head_dim] after rope, Hadamard and fp4 simulation,
// head_weights its per-head weights.
std::vector<int64_t> select_compressed_entries(const LayerContext& ctx, const ChunkView& chunk,
                                               int64_t position, const float* q_index,
                                               const float* head_weights);

// Attention of one query over `keys` [num_keys, head_dim] for every head, with sinks:
// q [heads, head_dim] -> out [heads, head_dim].
void attend(const float* q, const float* keys, int64_t num_keys, const float* sinks,
            int64_t heads, int64_t head_dim, float* out);

}  // namespace longctx::cpu

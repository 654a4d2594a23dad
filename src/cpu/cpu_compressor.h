// The KV compressors of one layer on the CPU.
//
// Compressed entry i of ratio r pools raw positions [i*r, (i+1)*r): per channel, a softmax over
// the positions of (projection score + ape) weights the projected values. Ratio 4 overlaps:
// entry i also pools block i-1 through the first half of the channels. The pooling runs as a
// streaming softmax, one position at a time in position order, so a chunk boundary anywhere
// gives the same result and the state between chunks is a few accumulators per channel. That
// state lives in the window page of the block holding the last processed position and is
// carried into the next block's page when a block starts.
#pragma once

#include "cpu/cpu_layer_context.h"

namespace longctx::cpu {

// Feeds the chunk's projections (rows of main_kv/main_score [width], and for the indexer
// index_kv/index_score [2 * index_head_dim]) through the compressors and writes every entry
// that completes into the compressed pages.
void run_compressors(const LayerContext& ctx, const ChunkView& chunk, const float* main_kv,
                     const float* main_score, const float* index_kv, const float* index_score);

// The finishing steps of a pooled vector: RMSNorm, RoPE at the entry's first position, then fp8
// simulation of the non-rope part (main) or Hadamard + fp4 simulation (indexer keys).
void finish_main_entry(const LayerContext& ctx, int64_t entry, float* values);
void finish_index_key(const LayerContext& ctx, int64_t entry, float* values);

}  // namespace longctx::cpu

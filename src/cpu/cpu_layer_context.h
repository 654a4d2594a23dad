// What the attention pieces of one layer need to see: its weights, its KV layout and memory,
// its rope table, and the chunks of the batch with their block tables.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/cpu_kv_storage.h"
#include "kv/block_tables.h"
#include "kv/kv_entry_codec.h"
#include "kv/kv_layout.h"
#include "longctx/model_config.h"
#include "model/model_weights.h"
#include "model/rope.h"

namespace longctx::cpu {

// One sequence's run of positions inside the batch's rows.
struct ChunkView {
  int64_t first_row = 0;
  int64_t rows = 0;
  int64_t start_pos = 0;
  const BlockTables* blocks = nullptr;
  float* state_snapshots = nullptr;  // see SequenceChunk::state_snapshots

  int64_t end_pos() const { return start_pos + rows; }
};

struct LayerContext {
  const ModelConfig& config;
  const AttentionWeights& weights;
  const LayerKvLayout& kv;
  const RopeTable& rope;
  CpuKvStorage& storage;
  KvEntryCodec kv_codec;
  IndexerKeyCodec key_codec;
  // Where this layer's state sits in a position's snapshot, and the snapshot's length.
  size_t snapshot_offset = 0;
  size_t snapshot_stride = 0;

  LayerContext(const ModelConfig& c, const AttentionWeights& w, const LayerKvLayout& l,
               const RopeTable& r, CpuKvStorage& s, const KvCacheOptions& options)
      : config(c), weights(w), kv(l), rope(r), storage(s),
        kv_codec{options.kv_dtype, c.head_dim, c.qk_rope_head_dim},
        key_codec{options.indexer_dtype, c.index_head_dim} {}

  uint8_t* window_page(const ChunkView& chunk, int64_t position) const;
  // The bytes of compressed entry `index` (main vector; the indexer key is at key_bytes).
  uint8_t* entry_bytes(const ChunkView& chunk, int64_t index) const;
  uint8_t* key_bytes(const ChunkView& chunk, int64_t index) const;
  float* state(const ChunkView& chunk, int64_t position) const;
};

}  // namespace longctx::cpu

// Layout of the hybrid paged KV cache of V4.
//
// Every sequence is cut into logical blocks of 256 token positions. A block table maps each
// logical block to one physical page per pool:
//  - the window pool, one page per block for every layer: the last sliding_window raw KV
//    vectors of the block (a ring indexed by position), followed by the layer's compressor
//    state (fp32 streaming-softmax accumulators). A sequence needs only the pages of its
//    current and previous block; older ones stay behind only as prefix-cache entries, where
//    the ring plus the state at the block's end is exactly what a prefix hit must restore.
//  - one pool per compression ratio r: the 256 / r compressed entries of the block (c4a: 64
//    main entries + 64 indexer keys; c128a: 2 entries).
// A page id indexes the same slot in every layer of its pool; each layer owns its memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "longctx/model_config.h"

namespace longctx {

inline constexpr int64_t kKvBlockSize = 256;

// Storage of the main KV vectors (window and compressed).
enum class KvDtype {
  kF32,   // exact, the CPU reference default
  kBF16,  // as the reference stores it
  kFP8,   // non-rope dims as e4m3 with per-64 ue8m0 scales (lossless after the model's own fp8
          // simulation) + rope dims in bf16
};
// Storage of the indexer keys.
enum class IndexerKeyDtype {
  kF32,
  kBF16,
  kFP4,  // e2m1 with per-32 ue8m0 scales (lossless after the model's own fp4 simulation)
};

const char* to_string(KvDtype dtype);
const char* to_string(IndexerKeyDtype dtype);
KvDtype parse_kv_dtype(const std::string& text);                // fp32 | bf16 | fp8
IndexerKeyDtype parse_indexer_key_dtype(const std::string& text);  // fp32 | bf16 | fp4

struct KvCacheOptions {
  KvDtype kv_dtype = KvDtype::kF32;
  IndexerKeyDtype indexer_dtype = IndexerKeyDtype::kF32;
};

// Bytes of one stored vector.
size_t kv_entry_bytes(KvDtype dtype, int64_t head_dim, int64_t rope_dim);
size_t indexer_key_bytes(IndexerKeyDtype dtype, int64_t index_head_dim);

// Streaming-softmax accumulator of one compressor output: per channel the running max, the
// running sum of exp(score - max) and the running weighted sum of projections.
struct CompressorAccumulatorLayout {
  int64_t channels = 0;
  // Offsets in floats from the accumulator's start.
  int64_t max_offset() const { return 0; }
  int64_t sum_offset() const { return channels; }
  int64_t weighted_offset() const { return 2 * channels; }
  int64_t floats() const { return 3 * channels; }
};

struct LayerKvLayout {
  int64_t layer = 0;
  int ratio = 0;
  bool has_indexer = false;
  int compressed_pool = -1;  // index into KvLayout::compressed_ratios, -1 for window-only layers

  // Window page.
  int64_t window_entries = 0;  // ring length: sliding_window
  size_t kv_entry_bytes = 0;
  size_t window_ring_bytes = 0;
  // Compressor state after the ring, in floats: main compressor accumulators (cur, then next
  // when overlapping) and the indexer compressor's likewise.
  size_t state_offset = 0;  // bytes from the page start; 16-byte aligned
  int64_t main_accumulators = 0;     // 0, 1 or 2
  int64_t indexer_accumulators = 0;  // 0 or 2
  CompressorAccumulatorLayout main_accumulator, indexer_accumulator;
  size_t state_floats = 0;
  size_t window_page_bytes = 0;

  // Compressed page (ratio > 0).
  int64_t entries_per_page = 0;  // 256 / ratio
  size_t indexer_key_bytes = 0;
  size_t indexer_offset = 0;     // bytes from the page start
  size_t compressed_page_bytes = 0;

  // Float offsets of the state's accumulators from the state start.
  size_t main_accumulator_offset(int64_t which) const {
    return static_cast<size_t>(which * main_accumulator.floats());
  }
  size_t indexer_accumulator_offset(int64_t which) const {
    return static_cast<size_t>(main_accumulators * main_accumulator.floats() +
                               which * indexer_accumulator.floats());
  }
};

struct KvLayout {
  ModelConfig config;
  KvCacheOptions options;
  std::vector<LayerKvLayout> layers;  // main layers then MTP blocks
  std::vector<int> compressed_ratios;  // one compressed pool per distinct ratio, ascending

  size_t num_pools() const { return 1 + compressed_ratios.size(); }  // pool 0 = window
  // Sum over layers of each pool's per-layer page bytes: the memory one page id costs.
  size_t window_page_bytes_all_layers() const;
  size_t compressed_page_bytes_all_layers(size_t pool) const;
  // KV bytes per token of sequence length, compressed pools only (the window cost is fixed).
  double compressed_bytes_per_token() const;
  // The constant per-sequence cost: two window pages (current and previous block).
  size_t window_bytes_per_sequence() const;
};

KvLayout make_kv_layout(const ModelConfig& config, const KvCacheOptions& options);

}  // namespace longctx

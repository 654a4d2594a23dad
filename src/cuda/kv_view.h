// The kernels' view of one layer's KV pages (KvLayerView), built from the host layout.
#pragma once

#include "cuda/kernels.h"
#include "kv/kv_layout.h"

namespace longctx::cuda {

inline KvLayerView make_kv_layer_view(const KvLayout& layout, int64_t layer, uint8_t* window_pages,
                                      uint8_t* compressed_pages) {
  const LayerKvLayout& l = layout.layers.at(static_cast<size_t>(layer));
  const ModelConfig& c = layout.config;
  KvLayerView v;
  v.window_pages = window_pages;
  v.compressed_pages = compressed_pages;
  v.window_page_bytes = static_cast<int64_t>(l.window_page_bytes);
  v.compressed_page_bytes = static_cast<int64_t>(l.compressed_page_bytes);
  v.kv_entry_bytes = static_cast<int64_t>(l.kv_entry_bytes);
  v.window_entries = static_cast<int>(l.window_entries);
  v.state_offset = static_cast<int64_t>(l.state_offset);
  v.ratio = l.ratio;
  v.compressed_pool = l.compressed_pool;
  v.entries_per_page = static_cast<int>(l.entries_per_page);
  v.indexer_offset = static_cast<int64_t>(l.indexer_offset);
  v.indexer_key_bytes = static_cast<int64_t>(l.indexer_key_bytes);
  v.main_channels = static_cast<int>(l.main_accumulator.channels);
  v.main_accumulators = static_cast<int>(l.main_accumulators);
  v.index_channels = static_cast<int>(l.indexer_accumulator.channels);
  v.kv_dtype = static_cast<int>(layout.options.kv_dtype);
  v.key_dtype = static_cast<int>(layout.options.indexer_dtype);
  v.head_dim = static_cast<int>(c.head_dim);
  v.rope_dim = static_cast<int>(c.qk_rope_head_dim);
  v.index_dim = static_cast<int>(c.index_head_dim);
  return v;
}

}  // namespace longctx::cuda

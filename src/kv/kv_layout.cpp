#include "kv/kv_layout.h"

#include <algorithm>
#include <set>

#include "longctx/error.h"

namespace longctx {
namespace {

size_t round_up(size_t value, size_t multiple) { return (value + multiple - 1) / multiple * multiple; }

}  // namespace

const char* to_string(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF32: return "fp32";
    case KvDtype::kBF16: return "bf16";
    case KvDtype::kFP8: return "fp8";
  }
  return "?";
}

const char* to_string(IndexerKeyDtype dtype) {
  switch (dtype) {
    case IndexerKeyDtype::kF32: return "fp32";
    case IndexerKeyDtype::kBF16: return "bf16";
    case IndexerKeyDtype::kFP4: return "fp4";
  }
  return "?";
}

KvDtype parse_kv_dtype(const std::string& text) {
  if (text == "fp32" || text == "float32") return KvDtype::kF32;
  if (text == "bf16" || text == "bfloat16") return KvDtype::kBF16;
  if (text == "fp8" || text == "fp8_e4m3") return KvDtype::kFP8;
  fail("KV cache dtype must be fp32, bf16 or fp8, got '", text, "'");
}

IndexerKeyDtype parse_indexer_key_dtype(const std::string& text) {
  if (text == "fp32" || text == "float32") return IndexerKeyDtype::kF32;
  if (text == "bf16" || text == "bfloat16") return IndexerKeyDtype::kBF16;
  if (text == "fp4") return IndexerKeyDtype::kFP4;
  fail("indexer key dtype must be fp32, bf16 or fp4, got '", text, "'");
}

size_t kv_entry_bytes(KvDtype dtype, int64_t head_dim, int64_t rope_dim) {
  const size_t d = static_cast<size_t>(head_dim);
  const size_t rd = static_cast<size_t>(rope_dim);
  switch (dtype) {
    case KvDtype::kF32: return d * 4;
    case KvDtype::kBF16: return d * 2;
    case KvDtype::kFP8:
      // [nope e4m3 codes][rope bf16][one e8m0 scale per 64 nope dims], padded to 8 bytes.
      return round_up((d - rd) + rd * 2 + (d - rd) / 64, 8);
  }
  return 0;
}

size_t indexer_key_bytes(IndexerKeyDtype dtype, int64_t index_head_dim) {
  const size_t d = static_cast<size_t>(index_head_dim);
  switch (dtype) {
    case IndexerKeyDtype::kF32: return d * 4;
    case IndexerKeyDtype::kBF16: return d * 2;
    case IndexerKeyDtype::kFP4: return d / 2 + d / 32;  // packed e2m1, then one scale per 32
  }
  return 0;
}

size_t KvLayout::window_page_bytes_all_layers() const {
  size_t total = 0;
  for (const LayerKvLayout& layer : layers) total += layer.window_page_bytes;
  return total;
}

size_t KvLayout::compressed_page_bytes_all_layers(size_t pool) const {
  size_t total = 0;
  for (const LayerKvLayout& layer : layers) {
    if (layer.compressed_pool == static_cast<int>(pool)) total += layer.compressed_page_bytes;
  }
  return total;
}

double KvLayout::compressed_bytes_per_token() const {
  double total = 0;
  for (size_t pool = 0; pool < compressed_ratios.size(); ++pool) {
    total += static_cast<double>(compressed_page_bytes_all_layers(pool)) / kKvBlockSize;
  }
  return total;
}

size_t KvLayout::window_bytes_per_sequence() const { return 2 * window_page_bytes_all_layers(); }

KvLayout make_kv_layout(const ModelConfig& config, const KvCacheOptions& options) {
  KvLayout layout;
  layout.config = config;
  layout.options = options;
  std::set<int> ratios;
  for (int64_t layer = 0; layer < config.num_layers_with_mtp(); ++layer) {
    if (config.compress_ratio(layer) > 0) ratios.insert(config.compress_ratio(layer));
  }
  layout.compressed_ratios.assign(ratios.begin(), ratios.end());

  for (int64_t layer = 0; layer < config.num_layers_with_mtp(); ++layer) {
    LayerKvLayout l;
    l.layer = layer;
    l.ratio = config.compress_ratio(layer);
    l.has_indexer = ModelConfig::ratio_uses_indexer(l.ratio);
    l.window_entries = config.sliding_window;
    l.kv_entry_bytes = kv_entry_bytes(options.kv_dtype, config.head_dim, config.qk_rope_head_dim);
    l.window_ring_bytes = static_cast<size_t>(l.window_entries) * l.kv_entry_bytes;
    l.state_offset = round_up(l.window_ring_bytes, 16);
    if (l.ratio > 0) {
      const bool overlap = l.ratio == 4;
      l.main_accumulators = overlap ? 2 : 1;
      l.main_accumulator.channels = config.head_dim;
      if (l.has_indexer) {
        l.indexer_accumulators = 2;
        l.indexer_accumulator.channels = config.index_head_dim;
      }
      l.state_floats = static_cast<size_t>(l.main_accumulators * l.main_accumulator.floats() +
                                           l.indexer_accumulators * l.indexer_accumulator.floats());
      l.compressed_pool = static_cast<int>(
          std::find(layout.compressed_ratios.begin(), layout.compressed_ratios.end(), l.ratio) -
          layout.compressed_ratios.begin());
      l.entries_per_page = kKvBlockSize / l.ratio;
      const size_t main_bytes = static_cast<size_t>(l.entries_per_page) * l.kv_entry_bytes;
      if (l.has_indexer) {
        l.indexer_key_bytes = indexer_key_bytes(options.indexer_dtype, config.index_head_dim);
        l.indexer_offset = round_up(main_bytes, 16);
        l.compressed_page_bytes =
            l.indexer_offset + static_cast<size_t>(l.entries_per_page) * l.indexer_key_bytes;
      } else {
        l.compressed_page_bytes = main_bytes;
      }
    }
    l.window_page_bytes = round_up(l.state_offset + l.state_floats * sizeof(float), 16);
    layout.layers.push_back(l);
  }
  return layout;
}

}  // namespace longctx

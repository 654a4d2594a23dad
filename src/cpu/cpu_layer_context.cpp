#include "cpu/cpu_layer_context.h"

#include "longctx/error.h"

namespace longctx::cpu {
namespace {

int32_t page_at(const std::vector<int32_t>& table, int64_t block, const char* what) {
  if (block < 0 || block >= static_cast<int64_t>(table.size()) ||
      table[static_cast<size_t>(block)] == kNoPage) {
    fail("CPU backend: no ", what, " page for logical block ", block);
  }
  return table[static_cast<size_t>(block)];
}

}  // namespace

uint8_t* LayerContext::window_page(const ChunkView& chunk, int64_t position) const {
  return storage.window_page(kv.layer, page_at(chunk.blocks->window, position / kKvBlockSize, "window"));
}

uint8_t* LayerContext::entry_bytes(const ChunkView& chunk, int64_t index) const {
  const int64_t block = index * kv.ratio / kKvBlockSize;
  const auto& table = chunk.blocks->compressed.at(static_cast<size_t>(kv.compressed_pool));
  uint8_t* page = storage.compressed_page(kv.layer, page_at(table, block, "compressed"));
  return page + static_cast<size_t>(index % kv.entries_per_page) * kv.kv_entry_bytes;
}

uint8_t* LayerContext::key_bytes(const ChunkView& chunk, int64_t index) const {
  const int64_t block = index * kv.ratio / kKvBlockSize;
  const auto& table = chunk.blocks->compressed.at(static_cast<size_t>(kv.compressed_pool));
  uint8_t* page = storage.compressed_page(kv.layer, page_at(table, block, "compressed"));
  return page + kv.indexer_offset + static_cast<size_t>(index % kv.entries_per_page) * kv.indexer_key_bytes;
}

float* LayerContext::state(const ChunkView& chunk, int64_t position) const {
  return reinterpret_cast<float*>(window_page(chunk, position) + kv.state_offset);
}

}  // namespace longctx::cpu

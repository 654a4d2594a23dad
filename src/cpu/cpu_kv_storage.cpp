#include "cpu/cpu_kv_storage.h"

#include "longctx/error.h"

namespace longctx {

CpuKvStorage::CpuKvStorage(const KvLayout& layout, const KvPoolSizes& sizes)
    : layout_(layout), sizes_(sizes) {
  for (const LayerKvLayout& layer : layout.layers) {
    window_.emplace_back(static_cast<size_t>(sizes.window_pages) * layer.window_page_bytes);
    if (layer.compressed_pool >= 0) {
      const int32_t pages = sizes.compressed_pages.at(static_cast<size_t>(layer.compressed_pool));
      compressed_.emplace_back(static_cast<size_t>(pages) * layer.compressed_page_bytes);
    } else {
      compressed_.emplace_back();
    }
  }
}

uint8_t* CpuKvStorage::window_page(int64_t layer, int32_t page) {
  if (page < 0 || page >= sizes_.window_pages) fail("CPU KV: window page ", page, " out of range");
  const LayerKvLayout& l = layout_.layers[static_cast<size_t>(layer)];
  return window_[static_cast<size_t>(layer)].data() + static_cast<size_t>(page) * l.window_page_bytes;
}

uint8_t* CpuKvStorage::compressed_page(int64_t layer, int32_t page) {
  const LayerKvLayout& l = layout_.layers[static_cast<size_t>(layer)];
  if (l.compressed_pool < 0) fail("CPU KV: layer ", layer, " has no compressed pages");
  if (page < 0 || page >= sizes_.compressed_pages[static_cast<size_t>(l.compressed_pool)]) {
    fail("CPU KV: compressed page ", page, " out of range");
  }
  return compressed_[static_cast<size_t>(layer)].data() + static_cast<size_t>(page) * l.compressed_page_bytes;
}

size_t CpuKvStorage::total_bytes() const {
  size_t total = 0;
  for (const auto& bytes : window_) total += bytes.size();
  for (const auto& bytes : compressed_) total += bytes.size();
  return total;
}

}  // namespace longctx

// Host memory behind the KV cache manager's page ids: for every layer, one array of window
// pages and (compressed layers) one array of compressed pages.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/kv_cache_manager.h"
#include "kv/kv_layout.h"

namespace longctx {

class CpuKvStorage {
 public:
  CpuKvStorage(const KvLayout& layout, const KvPoolSizes& sizes);

  const KvLayout& layout() const { return layout_; }
  uint8_t* window_page(int64_t layer, int32_t page);
  uint8_t* compressed_page(int64_t layer, int32_t page);
  size_t total_bytes() const;

 private:
  KvLayout layout_;
  KvPoolSizes sizes_;
  std::vector<std::vector<uint8_t>> window_;      // [layer]
  std::vector<std::vector<uint8_t>> compressed_;  // [layer]
};

}  // namespace longctx

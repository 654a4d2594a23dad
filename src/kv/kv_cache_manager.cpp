#include "kv/kv_cache_manager.h"

#include <algorithm>
#include <numeric>

#include "longctx/error.h"

namespace longctx {
namespace {

int64_t blocks_for(int64_t positions) { return (positions + kKvBlockSize - 1) / kKvBlockSize; }

uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// How far back (in positions) the next query may look: its window, and at least the previous
// position, whose block page holds the compressor state to carry into a new block.
int64_t lookback(const KvLayout& layout) {
  return std::max<int64_t>(layout.config.sliding_window - 1, 1);
}

}  // namespace

double KvCacheStats::usage() const {
  int64_t total = 0;
  int64_t unused = 0;
  for (size_t i = 0; i < total_pages.size(); ++i) {
    total += total_pages[i];
    unused += free_pages[i] + cached_pages[i];
  }
  return total == 0 ? 0.0 : static_cast<double>(total - unused) / static_cast<double>(total);
}

bool KvCacheManager::CachedBlock::empty() const {
  if (window_page != kNoPage) return false;
  return std::all_of(compressed_pages.begin(), compressed_pages.end(),
                     [](int32_t page) { return page == kNoPage; });
}

KvCacheManager::KvCacheManager(const KvLayout& layout, const KvPoolSizes& sizes,
                               bool enable_prefix_caching)
    : layout_(layout), sizes_(sizes), prefix_caching_(enable_prefix_caching) {
  if (sizes.compressed_pages.size() != layout.compressed_ratios.size()) {
    fail("KV cache: ", sizes.compressed_pages.size(), " compressed pool sizes given for ",
         layout.compressed_ratios.size(), " compressed pools");
  }
  std::vector<int32_t> counts = {sizes.window_pages};
  counts.insert(counts.end(), sizes.compressed_pages.begin(), sizes.compressed_pages.end());
  for (const int32_t count : counts) {
    if (count < 0) fail("KV cache: negative page count");
    Pool pool;
    pool.ref_count.assign(static_cast<size_t>(count), 0);
    pool.lru_position.resize(static_cast<size_t>(count));
    pool.cache_key.assign(static_cast<size_t>(count), 0);
    pool.cached.assign(static_cast<size_t>(count), false);
    // Hand out low ids first.
    for (int32_t page = count - 1; page >= 0; --page) pool.free_list.push_back(page);
    pools_.push_back(std::move(pool));
  }
  // Cached blocks are only valid for this model and these storage formats.
  const ModelConfig& c = layout.config;
  salt_ = mix64(static_cast<uint64_t>(c.hidden_size) * 1000003u + static_cast<uint64_t>(c.num_hidden_layers)) ^
          mix64(static_cast<uint64_t>(layout.options.kv_dtype) * 31u +
                static_cast<uint64_t>(layout.options.indexer_dtype));
}

KvCacheManager::SequenceId KvCacheManager::add_sequence() {
  const SequenceId id = next_id_++;
  Sequence seq;
  seq.tables.compressed.resize(layout_.compressed_ratios.size());
  sequences_.emplace(id, std::move(seq));
  return id;
}

KvCacheManager::Sequence& KvCacheManager::sequence(SequenceId id) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) fail("KV cache: unknown sequence ", id);
  return it->second;
}

const KvCacheManager::Sequence& KvCacheManager::sequence(SequenceId id) const {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) fail("KV cache: unknown sequence ", id);
  return it->second;
}

const BlockTables& KvCacheManager::tables(SequenceId id) const { return sequence(id).tables; }
int64_t KvCacheManager::computed(SequenceId id) const { return sequence(id).computed; }

uint64_t KvCacheManager::block_hash(uint64_t parent, std::span<const int32_t> tokens) const {
  uint64_t h = mix64(parent ^ salt_);
  for (const int32_t token : tokens) h = mix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(token)) + 0x9e3779b97f4a7c15ull));
  return h == 0 ? 1 : h;  // 0 marks "not cached"
}

void KvCacheManager::acquire(size_t pool_index, int32_t page) {
  Pool& pool = pools_[pool_index];
  if (pool.ref_count[static_cast<size_t>(page)]++ == 0 && pool.cached[static_cast<size_t>(page)]) {
    pool.lru.erase(pool.lru_position[static_cast<size_t>(page)]);
  }
}

void KvCacheManager::release(size_t pool_index, int32_t page) {
  Pool& pool = pools_[pool_index];
  int32_t& count = pool.ref_count[static_cast<size_t>(page)];
  if (count <= 0) fail("KV cache: page ", page, " of pool ", pool_index, " released twice");
  if (--count > 0) return;
  if (pool.cached[static_cast<size_t>(page)]) {
    pool.lru_position[static_cast<size_t>(page)] = pool.lru.insert(pool.lru.end(), page);
  } else {
    pool.free_list.push_back(page);
  }
}

// Takes an unreferenced cached page out of the cache.
void KvCacheManager::evict(size_t pool_index, int32_t page) {
  Pool& pool = pools_[pool_index];
  const uint64_t key = pool.cache_key[static_cast<size_t>(page)];
  pool.cached[static_cast<size_t>(page)] = false;
  pool.cache_key[static_cast<size_t>(page)] = 0;
  const auto entry = cache_.find(key);
  if (entry == cache_.end()) return;
  if (pool_index == kWindowPool) {
    entry->second.window_page = kNoPage;
  } else {
    entry->second.compressed_pages[pool_index - 1] = kNoPage;
  }
  if (entry->second.empty()) cache_.erase(entry);
}

int32_t KvCacheManager::take_page(size_t pool_index) {
  Pool& pool = pools_[pool_index];
  int32_t page;
  if (!pool.free_list.empty()) {
    page = pool.free_list.back();
    pool.free_list.pop_back();
  } else if (!pool.lru.empty()) {
    page = pool.lru.front();
    pool.lru.pop_front();
    evict(pool_index, page);
  } else {
    fail("KV cache: pool ", pool_index, " is exhausted");  // reserve() checks first
  }
  pool.ref_count[static_cast<size_t>(page)] = 1;
  return page;
}

int64_t KvCacheManager::match_prefix(SequenceId id, std::span<const int32_t> prompt) {
  Sequence& seq = sequence(id);
  if (seq.computed != 0 || !seq.tables.window.empty()) {
    fail("KV cache: match_prefix on sequence ", id, " that already holds pages");
  }
  queried_tokens_ += static_cast<int64_t>(prompt.size());
  if (!prefix_caching_) return 0;
  // Whole blocks only, and at least one prompt token left to compute the next token's logits.
  const int64_t max_blocks = (static_cast<int64_t>(prompt.size()) - 1) / kKvBlockSize;
  std::vector<uint64_t> hashes;
  std::vector<const CachedBlock*> entries;
  uint64_t parent = 0;
  int64_t usable_blocks = 0;  // the hit ends after a block whose window page is still cached
  for (int64_t b = 0; b < max_blocks; ++b) {
    const auto tokens = prompt.subspan(static_cast<size_t>(b * kKvBlockSize), kKvBlockSize);
    const uint64_t hash = block_hash(parent, tokens);
    const auto it = cache_.find(hash);
    if (it == cache_.end() || it->second.parent != parent ||
        !std::equal(tokens.begin(), tokens.end(), it->second.tokens.begin())) {
      break;
    }
    const CachedBlock& entry = it->second;
    if (std::any_of(entry.compressed_pages.begin(), entry.compressed_pages.end(),
                    [](int32_t page) { return page == kNoPage; })) {
      break;
    }
    hashes.push_back(hash);
    entries.push_back(&entry);
    if (entry.window_page != kNoPage) usable_blocks = b + 1;
    parent = hash;
  }
  if (usable_blocks == 0) return 0;
  for (int64_t b = 0; b < usable_blocks; ++b) {
    const CachedBlock& entry = *entries[static_cast<size_t>(b)];
    for (size_t pool = 0; pool < entry.compressed_pages.size(); ++pool) {
      acquire(pool + 1, entry.compressed_pages[pool]);
      seq.tables.compressed[pool].push_back(entry.compressed_pages[pool]);
    }
    seq.tables.window.push_back(kNoPage);
  }
  const CachedBlock& last = *entries[static_cast<size_t>(usable_blocks - 1)];
  acquire(kWindowPool, last.window_page);
  seq.tables.window.back() = last.window_page;
  seq.first_held_window_block = usable_blocks - 1;
  seq.computed = usable_blocks * kKvBlockSize;
  seq.tokens.assign(prompt.begin(), prompt.begin() + seq.computed);
  seq.block_hashes.assign(hashes.begin(), hashes.begin() + usable_blocks);
  hit_tokens_ += seq.computed;
  return seq.computed;
}

std::vector<int32_t> KvCacheManager::pages_needed(SequenceId id, int64_t end_position) const {
  const Sequence& seq = sequence(id);
  const int64_t blocks = blocks_for(end_position);
  std::vector<int32_t> needed(pools_.size(), 0);
  for (size_t pool = 0; pool < seq.tables.compressed.size(); ++pool) {
    needed[pool + 1] = static_cast<int32_t>(
        std::max<int64_t>(0, blocks - static_cast<int64_t>(seq.tables.compressed[pool].size())));
  }
  const int64_t first = std::max<int64_t>(0, seq.computed - lookback(layout_)) / kKvBlockSize;
  for (int64_t b = first; b < blocks; ++b) {
    if (b >= static_cast<int64_t>(seq.tables.window.size()) ||
        seq.tables.window[static_cast<size_t>(b)] == kNoPage) {
      ++needed[kWindowPool];
    }
  }
  return needed;
}

bool KvCacheManager::can_reserve(SequenceId id, int64_t end_position) const {
  const std::vector<int32_t> needed = pages_needed(id, end_position);
  for (size_t pool = 0; pool < pools_.size(); ++pool) {
    if (needed[pool] > pools_[pool].available()) return false;
  }
  return true;
}

bool KvCacheManager::reserve(SequenceId id, int64_t end_position) {
  if (!can_reserve(id, end_position)) return false;
  Sequence& seq = sequence(id);
  const int64_t blocks = blocks_for(end_position);
  for (size_t pool = 0; pool < seq.tables.compressed.size(); ++pool) {
    std::vector<int32_t>& table = seq.tables.compressed[pool];
    while (static_cast<int64_t>(table.size()) < blocks) table.push_back(take_page(pool + 1));
  }
  if (static_cast<int64_t>(seq.tables.window.size()) < blocks) {
    seq.tables.window.resize(static_cast<size_t>(blocks), kNoPage);
  }
  const int64_t first = std::max<int64_t>(0, seq.computed - lookback(layout_)) / kKvBlockSize;
  for (int64_t b = first; b < blocks; ++b) {
    int32_t& page = seq.tables.window[static_cast<size_t>(b)];
    if (page == kNoPage) page = take_page(kWindowPool);
  }
  return true;
}

void KvCacheManager::commit(SequenceId id, std::span<const int32_t> tokens) {
  Sequence& seq = sequence(id);
  const int64_t end = seq.computed + static_cast<int64_t>(tokens.size());
  if (blocks_for(end) > static_cast<int64_t>(seq.tables.window.size())) {
    fail("KV cache: sequence ", id, " committed past its reserved pages");
  }
  seq.tokens.insert(seq.tokens.end(), tokens.begin(), tokens.end());
  seq.computed = end;
  if (prefix_caching_) register_full_blocks(seq);
  release_unneeded_window_pages(seq);
}

void KvCacheManager::register_full_blocks(Sequence& seq) {
  const int64_t full_blocks = seq.computed / kKvBlockSize;
  while (static_cast<int64_t>(seq.block_hashes.size()) < full_blocks) {
    const int64_t b = static_cast<int64_t>(seq.block_hashes.size());
    const uint64_t parent = b == 0 ? 0 : seq.block_hashes.back();
    const std::span<const int32_t> tokens(seq.tokens.data() + b * kKvBlockSize, kKvBlockSize);
    const uint64_t hash = block_hash(parent, tokens);
    seq.block_hashes.push_back(hash);
    if (cache_.count(hash)) continue;  // another sequence cached this block already
    CachedBlock entry;
    entry.parent = parent;
    entry.tokens.assign(tokens.begin(), tokens.end());
    entry.window_page = seq.tables.window[static_cast<size_t>(b)];
    for (size_t pool = 0; pool < seq.tables.compressed.size(); ++pool) {
      entry.compressed_pages.push_back(seq.tables.compressed[pool][static_cast<size_t>(b)]);
    }
    // A page can belong to one entry only; it may already be cached if this sequence got it
    // from a prefix hit (then the hash would have matched), so this is a new page.
    auto mark = [&](size_t pool_index, int32_t page) {
      if (page == kNoPage) return;
      Pool& pool = pools_[pool_index];
      pool.cached[static_cast<size_t>(page)] = true;
      pool.cache_key[static_cast<size_t>(page)] = hash;
    };
    mark(kWindowPool, entry.window_page);
    for (size_t pool = 0; pool < entry.compressed_pages.size(); ++pool) {
      mark(pool + 1, entry.compressed_pages[pool]);
    }
    cache_.emplace(hash, std::move(entry));
  }
}

void KvCacheManager::release_unneeded_window_pages(Sequence& seq) {
  const int64_t first = std::max<int64_t>(0, seq.computed - lookback(layout_)) / kKvBlockSize;
  for (int64_t b = seq.first_held_window_block; b < first; ++b) {
    int32_t& page = seq.tables.window[static_cast<size_t>(b)];
    if (page != kNoPage) {
      release(kWindowPool, page);
      page = kNoPage;
    }
  }
  seq.first_held_window_block = std::max(seq.first_held_window_block, first);
}

void KvCacheManager::free_sequence(SequenceId id) {
  Sequence& seq = sequence(id);
  for (int32_t& page : seq.tables.window) {
    if (page != kNoPage) release(kWindowPool, page);
  }
  for (size_t pool = 0; pool < seq.tables.compressed.size(); ++pool) {
    for (const int32_t page : seq.tables.compressed[pool]) release(pool + 1, page);
  }
  sequences_.erase(id);
}

KvCacheStats KvCacheManager::stats() const {
  KvCacheStats stats;
  for (const Pool& pool : pools_) {
    stats.total_pages.push_back(static_cast<int32_t>(pool.ref_count.size()));
    stats.free_pages.push_back(static_cast<int32_t>(pool.free_list.size()));
    stats.cached_pages.push_back(static_cast<int32_t>(pool.lru.size()));
  }
  stats.cached_blocks = static_cast<int64_t>(cache_.size());
  stats.prefix_queried_tokens = queried_tokens_;
  stats.prefix_hit_tokens = hit_tokens_;
  return stats;
}

int64_t KvCacheManager::referenced_pages() const {
  int64_t total = 0;
  for (const Pool& pool : pools_) {
    total += std::count_if(pool.ref_count.begin(), pool.ref_count.end(), [](int32_t c) { return c > 0; });
  }
  return total;
}

void KvCacheManager::clear_prefix_cache() {
  for (size_t pool_index = 0; pool_index < pools_.size(); ++pool_index) {
    Pool& pool = pools_[pool_index];
    while (!pool.lru.empty()) {
      const int32_t page = pool.lru.front();
      pool.lru.pop_front();
      evict(pool_index, page);
      pool.free_list.push_back(page);
    }
  }
  // Entries whose pages are all referenced by live sequences stay; their pages return to the
  // free list when released because they are no longer marked cached.
  for (Pool& pool : pools_) {
    std::fill(pool.cached.begin(), pool.cached.end(), false);
    std::fill(pool.cache_key.begin(), pool.cache_key.end(), 0);
  }
  cache_.clear();
}

KvPoolSizes pool_sizes_for_blocks(const KvLayout& layout, int32_t blocks, int32_t sequences) {
  KvPoolSizes sizes;
  // A sequence holds the window pages of its current and previous block; with prefix caching
  // off that is all the window pool needs.
  sizes.window_pages = std::max(blocks, 2 * sequences);
  sizes.compressed_pages.assign(layout.compressed_ratios.size(), blocks);
  return sizes;
}

KvPoolSizes pool_sizes_for_memory(const KvLayout& layout, size_t bytes, int64_t max_sequences,
                                  int64_t max_batched_tokens, bool prefix_caching) {
  const size_t window_bytes = layout.window_page_bytes_all_layers();
  size_t block_bytes = 0;  // one page of every compressed pool
  for (size_t pool = 0; pool < layout.compressed_ratios.size(); ++pool) {
    block_bytes += layout.compressed_page_bytes_all_layers(pool);
  }
  int64_t window_pages = 2 * std::max<int64_t>(1, max_sequences) + blocks_for(max_batched_tokens) + 2;
  if (prefix_caching) window_pages *= 2;
  const size_t window_total = static_cast<size_t>(window_pages) * window_bytes;
  if (bytes <= window_total) {
    fail("KV cache: ", bytes, " bytes cannot hold the ", window_pages, " window pages (",
         window_total, " bytes) the sequences need");
  }
  const int64_t blocks = block_bytes == 0 ? 1 : static_cast<int64_t>((bytes - window_total) / block_bytes);
  if (blocks < 1) fail("KV cache: ", bytes, " bytes leave no room for compressed pages");
  KvPoolSizes sizes;
  sizes.window_pages = static_cast<int32_t>(std::min<int64_t>(window_pages, INT32_MAX));
  sizes.compressed_pages.assign(layout.compressed_ratios.size(),
                                static_cast<int32_t>(std::min<int64_t>(blocks, INT32_MAX)));
  return sizes;
}

}  // namespace longctx

// The hybrid paged KV cache manager: page pools, per-sequence block tables, reference counts
// and the prefix cache. It holds ids only; the memory behind the ids belongs to a backend
// (CPU arrays or GPU buffers), so the same manager serves both.
//
// Life of a sequence: add_sequence -> match_prefix (optional) -> reserve before each forward
// step -> commit after it (which registers full blocks in the prefix cache and gives back
// window pages that no future query can see) -> free_sequence. reserve is all-or-nothing:
// when it returns false nothing was allocated and the scheduler preempts someone.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv/block_tables.h"
#include "kv/kv_layout.h"

namespace longctx {

struct KvPoolSizes {
  int32_t window_pages = 0;
  std::vector<int32_t> compressed_pages;  // per compressed pool
};

struct KvCacheStats {
  std::vector<int32_t> total_pages;      // per pool, window first
  std::vector<int32_t> free_pages;       // never used or returned
  std::vector<int32_t> cached_pages;     // unreferenced but kept for prefix hits
  int64_t cached_blocks = 0;             // prefix-cache entries
  int64_t prefix_queried_tokens = 0;     // prompt tokens looked up
  int64_t prefix_hit_tokens = 0;         // of those, found in the cache
  double usage() const;                  // fraction of pages referenced by live sequences
};

class KvCacheManager {
 public:
  using SequenceId = int64_t;

  KvCacheManager(const KvLayout& layout, const KvPoolSizes& sizes, bool enable_prefix_caching);

  const KvLayout& layout() const { return layout_; }
  const KvPoolSizes& sizes() const { return sizes_; }
  bool prefix_caching() const { return prefix_caching_; }

  SequenceId add_sequence();
  // Attaches the longest cached prefix of `prompt` (whole blocks, leaving at least one token
  // to compute) to a sequence that holds no pages yet; returns the number of cached tokens.
  int64_t match_prefix(SequenceId id, std::span<const int32_t> prompt);
  // Makes sure pages exist for positions [0, end_position). All-or-nothing.
  bool reserve(SequenceId id, int64_t end_position);
  // Pages reserve(id, end_position) would take now.
  std::vector<int32_t> pages_needed(SequenceId id, int64_t end_position) const;
  bool can_reserve(SequenceId id, int64_t end_position) const;
  // Records that positions [computed(id), computed(id) + tokens.size()) are computed.
  void commit(SequenceId id, std::span<const int32_t> tokens);
  void free_sequence(SequenceId id);

  const BlockTables& tables(SequenceId id) const;
  int64_t computed(SequenceId id) const;
  bool has_sequence(SequenceId id) const { return sequences_.count(id) != 0; }
  size_t num_sequences() const { return sequences_.size(); }

  KvCacheStats stats() const;
  // Pages currently referenced by sequences, over all pools; 0 when nothing is live.
  int64_t referenced_pages() const;
  // Drops every unreferenced cached page (e.g. after the weights changed).
  void clear_prefix_cache();

 private:
  struct Pool {
    std::vector<int32_t> ref_count;
    std::vector<int32_t> free_list;
    // Unreferenced cached pages, least recently used first; with each page's list position.
    std::list<int32_t> lru;
    std::vector<std::list<int32_t>::iterator> lru_position;
    std::vector<uint64_t> cache_key;  // block hash of the entry holding the page, 0 if none
    std::vector<bool> cached;

    int32_t available() const { return static_cast<int32_t>(free_list.size() + lru.size()); }
  };

  struct CachedBlock {
    uint64_t parent = 0;
    std::vector<int32_t> tokens;
    int32_t window_page = kNoPage;
    std::vector<int32_t> compressed_pages;  // per compressed pool
    bool empty() const;
  };

  struct Sequence {
    BlockTables tables;
    int64_t computed = 0;
    std::vector<int32_t> tokens;   // of computed positions, for hashing full blocks
    std::vector<uint64_t> block_hashes;  // chain hash of each full block registered so far
    int64_t first_held_window_block = 0;  // window pages before this were given back
  };

  static constexpr size_t kWindowPool = 0;

  Sequence& sequence(SequenceId id);
  const Sequence& sequence(SequenceId id) const;
  int32_t take_page(size_t pool);
  void acquire(size_t pool, int32_t page);
  void release(size_t pool, int32_t page);
  void evict(size_t pool, int32_t page);
  uint64_t block_hash(uint64_t parent, std::span<const int32_t> tokens) const;
  void register_full_blocks(Sequence& seq);
  void release_unneeded_window_pages(Sequence& seq);

  KvLayout layout_;
  KvPoolSizes sizes_;
  bool prefix_caching_;
  uint64_t salt_;
  std::vector<Pool> pools_;  // window, then compressed pools
  std::unordered_map<uint64_t, CachedBlock> cache_;
  std::unordered_map<SequenceId, Sequence> sequences_;
  SequenceId next_id_ = 1;
  int64_t queried_tokens_ = 0;
  int64_t hit_tokens_ = 0;
};

// Pool sizes that give every pool room for `blocks` logical blocks: enough for one sequence of
// blocks * 256 tokens, or for several sequences sharing that many blocks.
KvPoolSizes pool_sizes_for_blocks(const KvLayout& layout, int32_t blocks, int32_t sequences);

// Pool sizes that fit `bytes` of memory: the window pool gets two pages per running sequence
// plus the blocks one step of `max_batched_tokens` new tokens can open (doubled with prefix
// caching, for the cached boundary pages); the compressed pools share the rest, one page of
// each pool per logical block.
KvPoolSizes pool_sizes_for_memory(const KvLayout& layout, size_t bytes, int64_t max_sequences,
                                  int64_t max_batched_tokens, bool prefix_caching);

}  // namespace longctx

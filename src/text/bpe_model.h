// The BPE model of tokenizer.json: a vocabulary (token string -> id) and ranked merges.
//
// A piece is split into initial symbols (one per byte for byte-level vocabularies, one per
// character otherwise), then the adjacent pair with the lowest merge rank is merged, leftmost
// first, until no pair has a merge. Short pieces use a linear scan; long ones (a 100 KB run of
// letters is one piece) a heap, so the cost stays O(n log n).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/json_util.h"

namespace longctx::text {

struct TransparentStringHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
};

template <typename Value>
using StringMap = std::unordered_map<std::string, Value, TransparentStringHash, std::equal_to<>>;

// Token ids index dense tables; ids from a file must stay below this (real vocabularies are
// far smaller), so that a corrupt file is an error instead of a huge allocation.
inline constexpr int64_t kMaxTokenId = int64_t{1} << 24;

enum class MergeStrategy { kAuto, kLinearScan, kHeap };

// Scratch space of BpeModel::encode, reused from piece to piece so that encoding does not
// allocate per piece.
struct BpeScratch {
  std::vector<int32_t> symbols;
  std::vector<std::pair<int32_t, int32_t>> rules;  // (rank, merged id) of each adjacent pair
};

class BpeModel {
 public:
  // Reads the "model" object of tokenizer.json (type BPE); `byte_level` says whether the
  // pre-tokenizer ends with ByteLevel. Throws Error on an unsupported option or a merge whose
  // parts or result are missing from the vocabulary.
  static BpeModel from_json(const Json& model, bool byte_level);

  // Appends the ids of one pre-tokenized piece (raw bytes when byte-level, else UTF-8 text).
  void encode(std::string_view piece, std::vector<int32_t>& ids) const;
  void encode(std::string_view piece, std::vector<int32_t>& ids, BpeScratch& scratch) const;

  // Applies the merges to `symbols` in place.
  void merge(std::vector<int32_t>& symbols, MergeStrategy strategy = MergeStrategy::kAuto) const;
  void merge(std::vector<int32_t>& symbols, MergeStrategy strategy, BpeScratch& scratch) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocabulary string of `id`, or null when the vocabulary has no such id.
  const std::string* token_for_id(int32_t id) const;
  int32_t max_id() const { return static_cast<int32_t>(tokens_.size()) - 1; }
  size_t merge_count() const { return merges_.size(); }

 private:
  struct MergeRule {
    int32_t rank;
    int32_t merged_id;
  };

  // Open-addressing hash table of merges keyed by the (left, right) id pair: the lookup is the
  // inner loop of encoding, and this is several times faster than std::unordered_map.
  class MergeTable {
   public:
    void reserve(size_t count);
    void insert_or_assign(uint64_t key, MergeRule rule);
    const MergeRule* find(uint64_t key) const;
    size_t size() const { return size_; }

   private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    size_t slot(uint64_t key) const;
    void grow();

    std::vector<uint64_t> keys_;
    std::vector<MergeRule> rules_;
    size_t size_ = 0;
    size_t mask_ = 0;
  };

  const MergeRule* find_merge(int32_t left, int32_t right) const;
  void merge_linear(std::vector<int32_t>& symbols,
                    std::vector<std::pair<int32_t, int32_t>>& rules) const;
  void merge_heap(std::vector<int32_t>& symbols) const;
  void append_unknown(std::string_view bytes, std::vector<int32_t>& symbols) const;

  StringMap<int32_t> vocab_;
  std::vector<std::string> tokens_;  // by id; empty where the vocabulary has a hole
  std::vector<uint8_t> has_token_;
  MergeTable merges_;
  int32_t byte_ids_[256];  // byte-level: id of each byte's character, -1 if absent
  bool byte_level_ = false;
  bool ignore_merges_ = false;
  bool byte_fallback_ = false;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
};

}  // namespace longctx::text

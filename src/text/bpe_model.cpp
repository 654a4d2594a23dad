#include "text/bpe_model.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <queue>

#include "longctx/error.h"
#include "text/byte_level.h"
#include "text/utf8.h"

namespace longctx::text {
namespace {

// Pieces up to this many symbols merge with the linear scan; it beats the heap on the short
// pieces that make up nearly all text.
constexpr size_t kLinearScanLimit = 48;

constexpr int32_t kNoRank = INT32_MAX;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

bool is_null_or_empty_string(const Json& model, const char* key) {
  if (!model.contains(key) || model[key].is_null()) return true;
  return model[key].is_string() && model[key].get<std::string>().empty();
}

// Splits one entry of "merges": "left right" (older files) or ["left", "right"].
std::pair<std::string, std::string> merge_parts(const Json& entry, size_t index) {
  if (entry.is_string()) {
    const std::string text = entry.get<std::string>();
    const size_t space = text.find(' ');
    if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
      fail("tokenizer.json: merge ", index, " must be two tokens separated by one space, found '",
           text, "'");
    }
    return {text.substr(0, space), text.substr(space + 1)};
  }
  if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
    return {entry[0].get<std::string>(), entry[1].get<std::string>()};
  }
  fail("tokenizer.json: merge ", index, " must be a string or a pair of strings, found ",
       json_type_name(entry));
}

}  // namespace

void BpeModel::MergeTable::reserve(size_t count) {
  size_t capacity = 16;
  while (capacity < count * 2)
    capacity *= 2;
  if (capacity <= keys_.size()) return;
  std::vector<uint64_t> old_keys = std::move(keys_);
  std::vector<MergeRule> old_rules = std::move(rules_);
  keys_.assign(capacity, kEmpty);
  rules_.assign(capacity, MergeRule{0, 0});
  mask_ = capacity - 1;
  size_ = 0;
  for (size_t i = 0; i < old_keys.size(); ++i) {
    if (old_keys[i] != kEmpty) insert_or_assign(old_keys[i], old_rules[i]);
  }
}

size_t BpeModel::MergeTable::slot(uint64_t key) const {
  // Fibonacci hashing spreads the structured (left << 32 | right) keys over the table.
  size_t index = static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_;
  while (keys_[index] != kEmpty && keys_[index] != key)
    index = (index + 1) & mask_;
  return index;
}

void BpeModel::MergeTable::insert_or_assign(uint64_t key, MergeRule rule) {
  if ((size_ + 1) * 2 > keys_.size()) reserve(size_ + 1);
  const size_t index = slot(key);
  if (keys_[index] == kEmpty) {
    keys_[index] = key;
    ++size_;
  }
  rules_[index] = rule;
}

const BpeModel::MergeRule* BpeModel::MergeTable::find(uint64_t key) const {
  if (size_ == 0) return nullptr;
  const size_t index = slot(key);
  return keys_[index] == kEmpty ? nullptr : &rules_[index];
}

BpeModel BpeModel::from_json(const Json& model, bool byte_level) {
  if (!model.is_object()) fail("tokenizer.json: \"model\" must be an object");
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") fail("tokenizer.json: model type '", type, "' is not supported (only BPE)");
  if (!is_null_or_empty_string(model, "continuing_subword_prefix") ||
      !is_null_or_empty_string(model, "end_of_word_suffix")) {
    fail("tokenizer.json: BPE continuing_subword_prefix / end_of_word_suffix are not supported");
  }
  if (model.contains("dropout") && model["dropout"].is_number() &&
      model["dropout"].get<double>() != 0.0) {
    fail("tokenizer.json: BPE dropout is not supported (encoding must be deterministic)");
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    fail("tokenizer.json: BPE model needs an object \"vocab\"");
  }
  if (!model.contains("merges") || !model["merges"].is_array()) {
    fail("tokenizer.json: BPE model needs an array \"merges\"");
  }

  BpeModel bpe;
  bpe.byte_level_ = byte_level;
  bpe.ignore_merges_ = model.value("ignore_merges", false);
  bpe.byte_fallback_ = model.value("byte_fallback", false);
  bpe.fuse_unk_ = model.value("fuse_unk", false);

  const Json& vocab = model["vocab"];
  bpe.vocab_.reserve(vocab.size());
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() >= kMaxTokenId) {
      fail("tokenizer.json: vocab entry '", it.key(), "' must have an integer id in 0..",
           kMaxTokenId - 1);
    }
    const int64_t id = it.value().get<int64_t>();
    bpe.vocab_.emplace(it.key(), static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  bpe.tokens_.assign(static_cast<size_t>(max_id + 1), std::string());
  bpe.has_token_.assign(static_cast<size_t>(max_id + 1), 0);
  for (const auto& [token, id] : bpe.vocab_) {
    bpe.tokens_[static_cast<size_t>(id)] = token;
    bpe.has_token_[static_cast<size_t>(id)] = 1;
  }

  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string unk = model["unk_token"].get<std::string>();
    bpe.unk_id_ = bpe.token_to_id(unk);
    if (!bpe.unk_id_) fail("tokenizer.json: unk_token '", unk, "' is not in the vocabulary");
  }

  const Json& merges = model["merges"];
  bpe.merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto [left, right] = merge_parts(merges[rank], rank);
    const std::optional<int32_t> left_id = bpe.token_to_id(left);
    const std::optional<int32_t> right_id = bpe.token_to_id(right);
    const std::optional<int32_t> merged_id = bpe.token_to_id(left + right);
    if (!left_id || !right_id || !merged_id) {
      fail("tokenizer.json: merge ", rank, " ('", left, "' + '", right,
           "') uses or makes a token missing from the vocabulary");
    }
    // A repeated pair takes its last rank: tokenizers collects the merges into a map.
    bpe.merges_.insert_or_assign(pair_key(*left_id, *right_id),
                                 MergeRule{static_cast<int32_t>(rank), *merged_id});
  }

  for (int byte = 0; byte < 256; ++byte) {
    const std::optional<int32_t> id =
        bpe.token_to_id(byte_level::char_for_byte(static_cast<uint8_t>(byte)));
    bpe.byte_ids_[byte] = id.value_or(-1);
  }
  return bpe;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::token_for_id(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size() || !has_token_[static_cast<size_t>(id)]) {
    return nullptr;
  }
  return &tokens_[static_cast<size_t>(id)];
}

const BpeModel::MergeRule* BpeModel::find_merge(int32_t left, int32_t right) const {
  return merges_.find(pair_key(left, right));
}

// A character missing from the vocabulary: byte fallback tokens if the model has them all,
// else the unknown token, else nothing (tokenizers drops it).
void BpeModel::append_unknown(std::string_view bytes, std::vector<int32_t>& symbols) const {
  if (byte_fallback_) {
    std::vector<int32_t> fallback;
    for (const char byte : bytes) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>",
                    static_cast<unsigned>(static_cast<uint8_t>(byte)));
      const std::optional<int32_t> id = token_to_id(name);
      if (!id) {
        fallback.clear();
        break;
      }
      fallback.push_back(*id);
    }
    if (!fallback.empty()) {
      symbols.insert(symbols.end(), fallback.begin(), fallback.end());
      return;
    }
  }
  if (!unk_id_) return;
  // With fuse_unk, a run of unknown characters becomes one unknown token.
  if (fuse_unk_ && !symbols.empty() && symbols.back() == *unk_id_) return;
  symbols.push_back(*unk_id_);
}

void BpeModel::encode(std::string_view piece, std::vector<int32_t>& ids) const {
  BpeScratch scratch;
  encode(piece, ids, scratch);
}

void BpeModel::encode(std::string_view piece, std::vector<int32_t>& ids,
                      BpeScratch& scratch) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    const std::string word = byte_level_ ? byte_level::encode(piece) : std::string(piece);
    if (const std::optional<int32_t> id = token_to_id(word)) {
      ids.push_back(*id);
      return;
    }
  }
  std::vector<int32_t>& symbols = scratch.symbols;
  symbols.clear();
  if (byte_level_) {
    for (const char byte : piece) {
      const int32_t id = byte_ids_[static_cast<uint8_t>(byte)];
      if (id >= 0) {
        symbols.push_back(id);
      } else {
        append_unknown(byte_level::char_for_byte(static_cast<uint8_t>(byte)), symbols);
      }
    }
  } else {
    size_t at = 0;
    while (at < piece.size()) {
      const size_t length = utf8::decode_one(piece.substr(at)).length;
      const std::string_view character = piece.substr(at, length);
      if (const std::optional<int32_t> id = token_to_id(character)) {
        symbols.push_back(*id);
      } else {
        append_unknown(character, symbols);
      }
      at += length;
    }
  }
  merge(symbols, MergeStrategy::kAuto, scratch);
  ids.insert(ids.end(), symbols.begin(), symbols.end());
}

void BpeModel::merge(std::vector<int32_t>& symbols, MergeStrategy strategy) const {
  BpeScratch scratch;
  merge(symbols, strategy, scratch);
}

void BpeModel::merge(std::vector<int32_t>& symbols, MergeStrategy strategy,
                     BpeScratch& scratch) const {
  if (symbols.size() < 2) return;
  if (strategy == MergeStrategy::kAuto) {
    strategy =
        symbols.size() <= kLinearScanLimit ? MergeStrategy::kLinearScan : MergeStrategy::kHeap;
  }
  if (strategy == MergeStrategy::kLinearScan) {
    merge_linear(symbols, scratch.rules);
  } else {
    merge_heap(symbols);
  }
}

void BpeModel::merge_linear(std::vector<int32_t>& symbols,
                            std::vector<std::pair<int32_t, int32_t>>& rules) const {
  // rules[i] is (rank, merged id) of the pair (symbols[i], symbols[i + 1]).
  const auto rule_of = [&](size_t i) {
    const MergeRule* rule = find_merge(symbols[i], symbols[i + 1]);
    return rule ? std::pair{rule->rank, rule->merged_id} : std::pair{kNoRank, -1};
  };
  rules.resize(symbols.size() - 1);
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    rules[i] = rule_of(i);
  while (!rules.empty()) {
    size_t best = 0;
    for (size_t i = 1; i < rules.size(); ++i) {
      if (rules[i].first < rules[best].first) best = i;
    }
    if (rules[best].first == kNoRank) break;
    symbols[best] = rules[best].second;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    rules.erase(rules.begin() + static_cast<std::ptrdiff_t>(best));
    // Only the pairs that touch the merged symbol change.
    const auto refresh = [&](size_t i) { rules[i] = rule_of(i); };
    if (best > 0) refresh(best - 1);
    if (best < rules.size()) refresh(best);
  }
}

void BpeModel::merge_heap(std::vector<int32_t>& symbols) const {
  const size_t n = symbols.size();
  std::vector<int64_t> prev(n);
  std::vector<int64_t> next(n);
  std::vector<uint8_t> alive(n, 1);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int64_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int64_t>(i) + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int64_t position;  // the left symbol; positions keep text order, so ties go leftmost
    int32_t merged_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push_pair = [&](int64_t left) {
    if (left < 0 || next[static_cast<size_t>(left)] < 0) return;
    const auto right = static_cast<size_t>(next[static_cast<size_t>(left)]);
    if (const MergeRule* rule = find_merge(symbols[static_cast<size_t>(left)], symbols[right])) {
      queue.push({rule->rank, left, rule->merged_id});
    }
  };
  for (size_t i = 0; i + 1 < n; ++i)
    push_pair(static_cast<int64_t>(i));

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const auto left = static_cast<size_t>(top.position);
    if (!alive[left] || next[left] < 0) continue;
    const auto right = static_cast<size_t>(next[left]);
    // Stale entry: one of the two symbols changed since this pair was queued.
    const MergeRule* rule = find_merge(symbols[left], symbols[right]);
    if (rule == nullptr || rule->rank != top.rank || rule->merged_id != top.merged_id) continue;
    symbols[left] = top.merged_id;
    alive[right] = 0;
    next[left] = next[right];
    if (next[right] >= 0) prev[static_cast<size_t>(next[right])] = static_cast<int64_t>(left);
    push_pair(prev[left]);
    push_pair(static_cast<int64_t>(left));
  }

  size_t out = 0;
  for (int64_t i = 0; i >= 0; i = next[static_cast<size_t>(i)])
    symbols[out++] = symbols[static_cast<size_t>(i)];
  symbols.resize(out);
}

}  // namespace longctx::text

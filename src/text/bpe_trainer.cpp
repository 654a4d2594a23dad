#include "text/bpe_trainer.h"

#include <unordered_map>

#include "text/byte_level.h"

namespace longctx::text {
namespace {

uint64_t pair_key(size_t left, size_t right) {
  return (static_cast<uint64_t>(left) << 32) | static_cast<uint64_t>(right);
}

}  // namespace

BpeTrainingResult train_byte_level_bpe(const std::map<std::string, int64_t>& word_counts,
                                       size_t max_new_tokens,
                                       const std::set<std::string>& reserved) {
  BpeTrainingResult result;
  std::unordered_map<std::string, size_t> index_of;
  for (int byte = 0; byte < 256; ++byte) {
    result.tokens.emplace_back(byte_level::char_for_byte(static_cast<uint8_t>(byte)));
    index_of.emplace(result.tokens.back(), result.tokens.size() - 1);
  }

  struct Word {
    std::vector<size_t> symbols;
    int64_t count;
  };
  std::vector<Word> words;
  for (const auto& [word, count] : word_counts) {
    Word entry{{}, count};
    for (const char byte : word)
      entry.symbols.push_back(static_cast<uint8_t>(byte));
    if (entry.symbols.size() > 1) words.push_back(std::move(entry));
  }

  std::set<uint64_t> banned;
  while (result.tokens.size() < 256 + max_new_tokens) {
    std::unordered_map<uint64_t, int64_t> pair_counts;
    for (const Word& word : words) {
      for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
        const uint64_t key = pair_key(word.symbols[i], word.symbols[i + 1]);
        if (!banned.count(key)) pair_counts[key] += word.count;
      }
    }
    uint64_t best_key = 0;
    int64_t best_count = 0;
    for (const auto& [key, count] : pair_counts) {
      if (count > best_count || (count == best_count && key < best_key)) {
        best_key = key;
        best_count = count;
      }
    }
    if (best_count == 0) break;

    const auto left = static_cast<size_t>(best_key >> 32);
    const auto right = static_cast<size_t>(best_key & 0xFFFFFFFFu);
    const std::string merged = result.tokens[left] + result.tokens[right];
    if (reserved.count(merged)) {
      banned.insert(best_key);
      continue;
    }
    size_t merged_index;
    if (const auto it = index_of.find(merged); it != index_of.end()) {
      merged_index = it->second;  // the same string reached by another split
    } else {
      result.tokens.push_back(merged);
      merged_index = result.tokens.size() - 1;
      index_of.emplace(merged, merged_index);
    }
    result.merges.emplace_back(result.tokens[left], result.tokens[right]);

    for (Word& word : words) {
      std::vector<size_t>& symbols = word.symbols;
      size_t out = 0;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          symbols[out++] = merged_index;
          ++i;
        } else {
          symbols[out++] = symbols[i];
        }
      }
      symbols.resize(out);
    }
  }
  return result;
}

}  // namespace longctx::text

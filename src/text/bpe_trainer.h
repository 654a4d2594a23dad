// A tiny byte-level BPE trainer: learns merges from word counts by repeatedly merging the most
// frequent adjacent pair. Used to build the test tokenizer; small corpora only (it recounts all
// pairs after every merge).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace longctx::text {

struct BpeTrainingResult {
  // Byte-level token strings: the 256 byte characters (in byte order), then each merged token
  // in the order it was learned.
  std::vector<std::string> tokens;
  // Each merge as (left, right) token strings, in rank order.
  std::vector<std::pair<std::string, std::string>> merges;
};

// `word_counts` maps raw byte strings (pre-tokenized pieces) to their frequency. Learns merges
// until `max_new_tokens` tokens beyond the 256 byte characters exist or no pair is left; a merge
// whose result would equal a string in `reserved` (the special tokens) is never made. Ties between
// equally frequent pairs go to the pair of earlier tokens, so the result is deterministic.
BpeTrainingResult train_byte_level_bpe(const std::map<std::string, int64_t>& word_counts,
                                       size_t max_new_tokens,
                                       const std::set<std::string>& reserved);

}  // namespace longctx::text

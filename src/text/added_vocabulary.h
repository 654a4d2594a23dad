// Added (special) tokens: strings matched in the text before BPE runs, each mapping to one id.
//
// Matching follows `tokenizers`: leftmost-longest, first the tokens marked normalized=false on
// the raw text, then the normalized ones on the normalized remainder; lstrip / rstrip absorb
// neighbouring white space and single_word rejects matches inside a word.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/bpe_model.h"
#include "text/regex.h"

namespace longctx::text {

class Normalizer;

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;  // skipped by decode(skip_special = true)
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;  // matched against normalized text
};

// A run of text, or one added token (id >= 0).
struct Segment {
  std::string_view text;
  int32_t id = -1;
};

class AddedVocabulary {
 public:
  AddedVocabulary();

  // Adds `token`. A token with the same content is replaced; an id that held another content
  // is taken over (the old content is no longer matched).
  void add(const AddedToken& token);
  // Must be called after the last add() and before split(); `normalizer` normalizes the content
  // of normalized tokens, as tokenizers does.
  void build(const Normalizer& normalizer);

  std::optional<int32_t> id_of(std::string_view content) const;
  const AddedToken* token_for_id(int32_t id) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  bool empty() const { return tokens_.empty(); }

  // Appends to `out` the segments of `text`, matching the normalized (or the non-normalized)
  // tokens only.
  void split(std::string_view text, bool normalized_tokens, std::vector<Segment>& out) const;

 private:
  // A byte trie of token contents for leftmost-longest matching.
  struct Trie {
    struct Node {
      std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
      int32_t token = -1;                                 // index into tokens_
    };
    std::vector<Node> nodes;
    bool first_byte[256] = {};

    void insert(std::string_view key, int32_t token);
    // Length and token of the longest key that starts at text[at], if any.
    std::optional<std::pair<size_t, int32_t>> longest_at(std::string_view text, size_t at) const;
  };

  bool is_word_boundary_before(std::string_view text, size_t at) const;
  bool is_word_boundary_after(std::string_view text, size_t at) const;

  std::vector<AddedToken> tokens_;
  StringMap<size_t> index_by_content_;
  Trie raw_trie_;
  Trie normalized_trie_;
  std::shared_ptr<Regex> word_character_;  // \w as Rust's regex crate defines it
};

}  // namespace longctx::text

#include "text/added_vocabulary.h"

#include <algorithm>

#include "text/normalizer.h"
#include "text/utf8.h"

namespace longctx::text {
namespace {

// Start of the character that ends at `end` (exclusive).
size_t previous_character_start(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80)
    --start;
  return start;
}

}  // namespace

AddedVocabulary::AddedVocabulary()
    : word_character_(
          std::make_shared<Regex>(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])")) {}

void AddedVocabulary::Trie::insert(std::string_view key, int32_t token) {
  if (key.empty()) return;
  if (nodes.empty()) nodes.emplace_back();
  first_byte[static_cast<uint8_t>(key[0])] = true;
  size_t node = 0;
  for (const char c : key) {
    const auto byte = static_cast<uint8_t>(c);
    auto& children = nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const auto& child, uint8_t b) { return child.first < b; });
    if (it != children.end() && it->first == byte) {
      node = static_cast<size_t>(it->second);
      continue;
    }
    const auto child = static_cast<int32_t>(nodes.size());
    children.insert(it, {byte, child});
    nodes.emplace_back();
    node = static_cast<size_t>(child);
  }
  nodes[node].token = token;
}

std::optional<std::pair<size_t, int32_t>> AddedVocabulary::Trie::longest_at(std::string_view text,
                                                                            size_t at) const {
  std::optional<std::pair<size_t, int32_t>> best;
  size_t node = 0;
  for (size_t i = at; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    const auto& children = nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), byte,
                               [](const auto& child, uint8_t b) { return child.first < b; });
    if (it == children.end() || it->first != byte) break;
    node = static_cast<size_t>(it->second);
    if (nodes[node].token >= 0) best = std::make_pair(i + 1 - at, nodes[node].token);
  }
  return best;
}

void AddedVocabulary::add(const AddedToken& token) {
  std::erase_if(tokens_, [&](const AddedToken& existing) {
    return existing.content == token.content || existing.id == token.id;
  });
  tokens_.push_back(token);
  index_by_content_.clear();
  for (size_t i = 0; i < tokens_.size(); ++i)
    index_by_content_.emplace(tokens_[i].content, i);
}

void AddedVocabulary::build(const Normalizer& normalizer) {
  raw_trie_ = Trie();
  normalized_trie_ = Trie();
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& token = tokens_[i];
    if (token.normalized) {
      normalized_trie_.insert(normalizer.apply(token.content), static_cast<int32_t>(i));
    } else {
      raw_trie_.insert(token.content, static_cast<int32_t>(i));
    }
  }
}

std::optional<int32_t> AddedVocabulary::id_of(std::string_view content) const {
  const auto it = index_by_content_.find(content);
  if (it == index_by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const AddedToken* AddedVocabulary::token_for_id(int32_t id) const {
  for (const AddedToken& token : tokens_) {
    if (token.id == id) return &token;
  }
  return nullptr;
}

bool AddedVocabulary::is_word_boundary_before(std::string_view text, size_t at) const {
  if (at == 0) return true;
  const size_t start = previous_character_start(text, at);
  return !word_character_->matches_whole(text.substr(start, at - start));
}

bool AddedVocabulary::is_word_boundary_after(std::string_view text, size_t at) const {
  if (at >= text.size()) return true;
  const size_t length = utf8::decode_one(text.substr(at)).length;
  return !word_character_->matches_whole(text.substr(at, length));
}

void AddedVocabulary::split(std::string_view text, bool normalized_tokens,
                            std::vector<Segment>& out) const {
  const Trie& trie = normalized_tokens ? normalized_trie_ : raw_trie_;
  if (trie.nodes.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return;
  }
  size_t emitted = 0;  // text before this offset is already in `out`
  size_t search = 0;
  while (search < text.size()) {
    if (!trie.first_byte[static_cast<uint8_t>(text[search])]) {
      ++search;
      continue;
    }
    const auto match = trie.longest_at(text, search);
    if (!match) {
      ++search;
      continue;
    }
    size_t start = search;
    size_t stop = search + match->first;
    const AddedToken& token = tokens_[static_cast<size_t>(match->second)];
    search = stop;
    if (token.single_word &&
        !(is_word_boundary_before(text, start) && is_word_boundary_after(text, stop))) {
      continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > emitted) {
        const size_t previous = previous_character_start(text, new_start);
        const utf8::Sequence sequence = utf8::decode_one(text.substr(previous));
        if (sequence.status != utf8::SequenceStatus::kValid ||
            !utf8::is_white_space(sequence.code_point)) {
          break;
        }
        new_start = previous;
      }
      start = new_start;
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        const utf8::Sequence sequence = utf8::decode_one(text.substr(stop));
        if (sequence.status != utf8::SequenceStatus::kValid ||
            !utf8::is_white_space(sequence.code_point)) {
          break;
        }
        stop += sequence.length;
      }
      search = stop;
    }
    if (emitted < start) out.push_back({text.substr(emitted, start - emitted), -1});
    out.push_back({text.substr(start, stop - start), token.id});
    emitted = stop;
  }
  if (emitted < text.size()) out.push_back({text.substr(emitted), -1});
}

}  // namespace longctx::text

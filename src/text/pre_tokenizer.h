// The "pre_tokenizer" section of tokenizer.json: splits text into pieces before BPE, which then
// runs on each piece alone.
//
// Supported: null, Sequence, Split (String or Regex pattern, all five delimiter behaviours,
// invert), Digits and ByteLevel (add_prefix_space, use_regex with GPT-2's pattern). ByteLevel must
// come last, as in every byte-level tokenizer: the pieces stay raw bytes here and the BPE model
// maps them to the byte alphabet itself.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/json_util.h"
#include "text/regex.h"

namespace longctx::text {

// What a Split does with the parts its pattern matches (the names of `tokenizers`).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// A run of a piece that a Split pattern matched or not (before folding) / that is removed or
// kept (after folding).
struct SplitSpan {
  size_t start;
  size_t end;
  bool flag;
};

// Pieces view into the input text or into strings the pre-tokenizer had to build (a prefix
// space); `arena` owns those and must outlive the pieces. The other members are scratch space
// reused from call to call so that splitting does not allocate per piece.
struct PieceBuffer {
  std::vector<std::string_view> pieces;
  std::deque<std::string> arena;

  std::vector<std::string_view> next;
  std::vector<Match> matches;
  std::vector<SplitSpan> spans;
  std::vector<SplitSpan> folded;
  RegexScratch regex;
};

class PreTokenizer {
 public:
  // Builds the chain described by `spec`; throws Error naming an unsupported type or a
  // ByteLevel step that is not last.
  static PreTokenizer from_json(const Json& spec);

  // Replaces `buffer.pieces` with the pieces of `text`; throws Error if `text` is not valid UTF-8.
  void split(std::string_view text, PieceBuffer& buffer) const;

  // True when the chain ends with ByteLevel: BPE then starts from one symbol per byte.
  bool byte_level() const { return byte_level_; }

 private:
  struct SplitStep {
    std::shared_ptr<Regex> regex;  // null: split on `literal`
    std::string literal;
    SplitBehavior behavior;
    bool invert;
  };
  struct PrefixSpaceStep {};
  using Step = std::variant<SplitStep, PrefixSpaceStep>;

  void add_steps(const Json& spec);
  void apply_split(const SplitStep& step, std::string_view piece, PieceBuffer& buffer) const;

  std::vector<Step> steps_;
  bool byte_level_ = false;
};

SplitBehavior parse_split_behavior(const std::string& name);

}  // namespace longctx::text

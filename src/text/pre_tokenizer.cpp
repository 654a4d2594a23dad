#include "text/pre_tokenizer.h"

#include <algorithm>

#include "longctx/error.h"
#include "text/utf8.h"

namespace longctx::text {
namespace {

// GPT-2's pattern, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::shared_ptr<Regex> compile_shared(const std::string& pattern) {
  return std::make_shared<Regex>(pattern);
}

// Applies `behavior` to the match/non-match spans that cover a piece, as NormalizedString::split
// does in `tokenizers`; writes spans flagged for removal to `out`.
void fold(const std::vector<SplitSpan>& spans, SplitBehavior behavior,
          std::vector<SplitSpan>& out) {
  out.clear();
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const SplitSpan& span : spans)
        out.push_back({span.start, span.end, false});
      break;
    case SplitBehavior::kRemoved:
      for (const SplitSpan& span : spans)
        out.push_back(span);
      break;
    case SplitBehavior::kContiguous:
      for (const SplitSpan& span : spans) {
        if (span.flag == previous_match && !out.empty()) {
          out.back().end = span.end;
        } else {
          out.push_back({span.start, span.end, false});
        }
        previous_match = span.flag;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const SplitSpan& span : spans) {
        if (span.flag && !previous_match && !out.empty()) {
          out.back().end = span.end;
        } else {
          out.push_back({span.start, span.end, false});
        }
        previous_match = span.flag;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->flag && !previous_match && !out.empty()) {
          out.back().start = it->start;
        } else {
          out.push_back({it->start, it->end, false});
        }
        previous_match = it->flag;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
}

}  // namespace

SplitBehavior parse_split_behavior(const std::string& name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  fail(
      "tokenizer.json: Split behavior must be Removed, Isolated, MergedWithPrevious, "
      "MergedWithNext or Contiguous, found '",
      name, "'");
}

PreTokenizer PreTokenizer::from_json(const Json& spec) {
  PreTokenizer pre_tokenizer;
  pre_tokenizer.add_steps(spec);
  return pre_tokenizer;
}

void PreTokenizer::add_steps(const Json& spec) {
  if (spec.is_null()) return;
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    fail("tokenizer.json: a pre_tokenizer must be an object with a string \"type\", found ",
         json_type_name(spec));
  }
  const std::string type = spec["type"].get<std::string>();
  if (byte_level_)
    fail("tokenizer.json: pre_tokenizer ByteLevel must be last, found ", type, " after it");
  if (type == "Sequence") {
    if (!spec.contains("pretokenizers") || !spec["pretokenizers"].is_array()) {
      fail("tokenizer.json: pre_tokenizer Sequence needs an array \"pretokenizers\"");
    }
    for (const Json& child : spec["pretokenizers"])
      add_steps(child);
  } else if (type == "Split") {
    if (!spec.contains("pattern") || !spec["pattern"].is_object()) {
      fail("tokenizer.json: pre_tokenizer Split needs an object \"pattern\"");
    }
    const Json& pattern = spec["pattern"];
    SplitStep step;
    if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      step.regex = compile_shared(pattern["Regex"].get<std::string>());
    } else if (pattern.contains("String") && pattern["String"].is_string()) {
      step.literal = pattern["String"].get<std::string>();
    } else {
      fail("tokenizer.json: Split pattern must hold a string \"Regex\" or \"String\"");
    }
    if (!spec.contains("behavior") || !spec["behavior"].is_string()) {
      fail("tokenizer.json: pre_tokenizer Split needs a string \"behavior\"");
    }
    step.behavior = parse_split_behavior(spec["behavior"].get<std::string>());
    step.invert = spec.value("invert", false);
    steps_.emplace_back(std::move(step));
  } else if (type == "Digits") {
    // tokenizers splits on char::is_numeric (categories Nd, Nl, No), i.e. \p{N}.
    SplitStep step;
    const bool individual = spec.value("individual_digits", false);
    step.regex = compile_shared(individual ? R"(\p{N})" : R"(\p{N}+)");
    step.behavior = SplitBehavior::kIsolated;
    step.invert = false;
    steps_.emplace_back(std::move(step));
  } else if (type == "ByteLevel") {
    if (spec.value("add_prefix_space", true)) steps_.emplace_back(PrefixSpaceStep{});
    if (spec.value("use_regex", true)) {
      SplitStep step;
      step.regex = compile_shared(kGpt2Pattern);
      step.behavior = SplitBehavior::kIsolated;
      step.invert = false;
      steps_.emplace_back(std::move(step));
    }
    byte_level_ = true;
  } else {
    fail("tokenizer.json: pre_tokenizer type '", type,
         "' is not supported (supported: Sequence, Split, Digits, ByteLevel)");
  }
}

void PreTokenizer::apply_split(const SplitStep& step, std::string_view piece,
                               PieceBuffer& buffer) const {
  std::vector<std::string_view>& out = buffer.next;
  std::vector<Match>& matches = buffer.matches;
  matches.clear();
  if (step.regex) {
    step.regex->find_all_in_valid(piece, matches, buffer.regex);
  } else if (!step.literal.empty()) {
    for (size_t at = piece.find(step.literal); at != std::string_view::npos;
         at = piece.find(step.literal, at + step.literal.size())) {
      matches.push_back({at, at + step.literal.size()});
    }
  }
  if (matches.empty() && !step.invert) {
    // Nothing to split (the common case for short pieces): skip the folding work.
    out.push_back(piece);
    return;
  }
  std::vector<SplitSpan>& spans = buffer.spans;
  spans.clear();
  size_t previous = 0;
  for (const Match& match : matches) {
    if (previous != match.start) spans.push_back({previous, match.start, false});
    spans.push_back({match.start, match.end, true});
    previous = match.end;
  }
  if (previous != piece.size() || spans.empty()) spans.push_back({previous, piece.size(), false});
  if (step.invert) {
    for (SplitSpan& span : spans)
      span.flag = !span.flag;
  }
  fold(spans, step.behavior, buffer.folded);
  for (const SplitSpan& span : buffer.folded) {
    if (!span.flag && span.start != span.end) {
      out.push_back(piece.substr(span.start, span.end - span.start));
    }
  }
}

void PreTokenizer::split(std::string_view text, PieceBuffer& buffer) const {
  buffer.pieces.clear();
  if (text.empty()) return;
  if (!utf8::is_valid(text)) fail("pre-tokenizer: text is not valid UTF-8");
  buffer.pieces.push_back(text);
  std::vector<std::string_view>& next = buffer.next;
  for (const Step& step : steps_) {
    next.clear();
    if (const auto* split_step = std::get_if<SplitStep>(&step)) {
      for (const std::string_view piece : buffer.pieces)
        apply_split(*split_step, piece, buffer);
    } else {
      for (const std::string_view piece : buffer.pieces) {
        if (piece.front() == ' ') {
          next.push_back(piece);
        } else {
          std::string& spaced = buffer.arena.emplace_back();
          spaced.reserve(piece.size() + 1);
          spaced.push_back(' ');
          spaced.append(piece);
          next.push_back(spaced);
        }
      }
    }
    buffer.pieces.swap(next);
  }
}

}  // namespace longctx::text

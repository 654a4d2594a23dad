// A compiled Unicode regular expression (PCRE2, JIT when available) for the patterns that
// tokenizer.json files carry.
//
// Hugging Face `tokenizers` compiles those patterns with Oniguruma. PCRE2 in UTF + UCP mode reads
// the same syntax; the one difference that matters for tokenizer patterns is `\s`: PCRE2 also
// counts U+180E as a space, Oniguruma uses the Unicode White_Space property. The constructor
// rewrites `\s` and `\S` into explicit White_Space classes so both engines split alike.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace longctx::text {

struct Match {
  size_t start;
  size_t end;
};

// Reusable match state (PCRE2 match data), so that repeated searches do not allocate. One per
// thread; any Regex can use it.
class RegexScratch {
 public:
  RegexScratch();
  ~RegexScratch();
  RegexScratch(const RegexScratch&) = delete;
  RegexScratch& operator=(const RegexScratch&) = delete;
  void* match_data() const { return data_; }

 private:
  void* data_;  // pcre2_match_data*
};

class Regex {
 public:
  // Compiles `pattern` (Oniguruma syntax as written in tokenizer.json); throws Error naming the
  // pattern and PCRE2's message if it does not compile.
  explicit Regex(std::string_view pattern);
  ~Regex();
  Regex(Regex&& other) noexcept;
  Regex& operator=(Regex&& other) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends to `matches` every match in `text` (valid UTF-8), left to right, with the rule of
  // Rust's find_iter: after a match, an empty match at the same position is skipped and the
  // search moves one character on. Empty matches elsewhere are reported.
  void find_all(std::string_view text, std::vector<Match>& matches) const;
  // The same without the UTF-8 check, for callers that validated the whole text already.
  void find_all_in_valid(std::string_view valid_utf8, std::vector<Match>& matches,
                         RegexScratch& scratch) const;

  // True if the whole of `text` matches.
  bool matches_whole(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  void release();

  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code*; kept opaque so PCRE2's header stays out of ours
};

// The pattern with `\s` / `\S` replaced by explicit Unicode White_Space classes.
std::string translate_oniguruma_pattern(std::string_view pattern);

}  // namespace longctx::text

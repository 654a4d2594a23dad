#include "text/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <utility>

#include "longctx/error.h"
#include "text/utf8.h"

namespace longctx::text {
namespace {

// Unicode White_Space, the set Oniguruma's \s matches: written once for use inside a class.
constexpr std::string_view kWhiteSpaceRanges =
    "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}"
    "\\x{205f}\\x{3000}";

pcre2_code* as_code(void* code) {
  return static_cast<pcre2_code*>(code);
}

std::string pcre2_message(int error_code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(error_code, buffer, sizeof(buffer)) < 0) {
    return "PCRE2 error " + std::to_string(error_code);
  }
  return reinterpret_cast<const char*>(buffer);
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

std::string translate_oniguruma_pattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  size_t class_start = 0;  // index in `pattern` just after '[' (and a leading '^')
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[i + 1];
      if (next == 's') {
        if (in_class) {
          out.append(kWhiteSpaceRanges);
        } else {
          out.append("[").append(kWhiteSpaceRanges).append("]");
        }
      } else if (next == 'S' && !in_class) {
        out.append("[^").append(kWhiteSpaceRanges).append("]");
      } else {
        // Any other escape (\S inside a class included) is copied; PCRE2 reads it alike.
        out.push_back(c);
        out.push_back(next);
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') {
        out.push_back('^');
        ++i;
      }
      class_start = i + 1;
      continue;
    }
    // A ']' right after '[' or '[^' is a literal member, not the end of the class.
    if (in_class && c == ']' && i != class_start) in_class = false;
    out.push_back(c);
  }
  return out;
}

Regex::Regex(std::string_view pattern) : pattern_(pattern) {
  const std::string translated = translate_oniguruma_pattern(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    fail("regex '", pattern, "' does not compile: ", pcre2_message(error_code), " at offset ",
         error_offset);
  }
  // JIT is an optimisation only: without it (an unsupported CPU) matching still works.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() {
  release();
}

Regex::Regex(Regex&& other) noexcept
    : pattern_(std::move(other.pattern_)), code_(std::exchange(other.code_, nullptr)) {}

Regex& Regex::operator=(Regex&& other) noexcept {
  if (this != &other) {
    release();
    pattern_ = std::move(other.pattern_);
    code_ = std::exchange(other.code_, nullptr);
  }
  return *this;
}

void Regex::release() {
  if (code_ != nullptr) pcre2_code_free(as_code(code_));
  code_ = nullptr;
}

RegexScratch::RegexScratch() : data_(pcre2_match_data_create(1, nullptr)) {
  if (data_ == nullptr) fail("regex: out of memory for match data");
}

RegexScratch::~RegexScratch() {
  pcre2_match_data_free(static_cast<pcre2_match_data*>(data_));
}

void Regex::find_all(std::string_view text, std::vector<Match>& matches) const {
  if (!utf8::is_valid(text)) fail("regex '", pattern_, "': subject is not valid UTF-8");
  RegexScratch scratch;
  find_all_in_valid(text, matches, scratch);
}

void Regex::find_all_in_valid(std::string_view text, std::vector<Match>& matches,
                              RegexScratch& scratch) const {
  auto* data = static_cast<pcre2_match_data*>(scratch.match_data());
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());

  size_t search_from = 0;
  bool have_previous = false;
  size_t previous_end = 0;
  while (search_from <= text.size()) {
    uint32_t options = PCRE2_NO_UTF_CHECK;
    int rc = pcre2_match(as_code(code_), subject, text.size(), search_from, options, data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // Deep backtracking outgrew the JIT stack; the interpreter keeps its frames on the heap.
      options |= PCRE2_NO_JIT;
      rc = pcre2_match(as_code(code_), subject, text.size(), search_from, options, data, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail("regex '", pattern_, "' failed to match: ", pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t start = ovector[0];
    const size_t end = ovector[1];
    if (start == end && have_previous && end == previous_end) {
      // An empty match right where the last one ended: step over one character.
      if (search_from >= text.size()) break;
      search_from += utf8::decode_one(text.substr(search_from)).length;
      continue;
    }
    matches.push_back({start, end});
    have_previous = true;
    previous_end = end;
    search_from = end;
    if (start == end) {
      if (search_from >= text.size()) break;
      // The next search must not report this empty match again; the rule above handles
      // that, but only after one more call, so move on now.
      search_from += utf8::decode_one(text.substr(search_from)).length;
    }
  }
}

bool Regex::matches_whole(std::string_view text) const {
  if (!utf8::is_valid(text)) return false;
  const std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(
      pcre2_match_data_create_from_pattern(as_code(code_), nullptr));
  if (!data) fail("regex '", pattern_, "': out of memory");
  const int rc =
      pcre2_match(as_code(code_), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                  PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED | PCRE2_ENDANCHORED, data.get(), nullptr);
  return rc >= 0;
}

}  // namespace longctx::text

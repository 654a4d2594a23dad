// UTF-8 helpers for the text layer: validation, lossy repair and incremental decoding.
//
// Ill-formed input is repaired the way Python's `bytes.decode("utf-8", "replace")` and Rust's
// `String::from_utf8_lossy` do it: each maximal ill-formed subsequence becomes one U+FFFD. Using
// the same rule as the reference tokenizer keeps our ids equal to its ids on repaired text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace longctx::text::utf8 {

inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

enum class SequenceStatus {
  kValid,      // a whole well-formed character
  kInvalid,    // ill-formed: `length` bytes form the maximal ill-formed subsequence
  kTruncated,  // well-formed so far, but the input ends before the character does
};

struct Sequence {
  SequenceStatus status;
  size_t length;        // bytes the character (or ill-formed part, or truncated prefix) spans
  char32_t code_point;  // valid only when status == kValid
};

// Classifies the character that starts at bytes[0]; `bytes` must not be empty.
Sequence decode_one(std::string_view bytes);

bool is_valid(std::string_view bytes);

// Appends `bytes` to `out`, each maximal ill-formed subsequence replaced by U+FFFD. When
// `final` is false, a trailing character that is well-formed so far but incomplete is left
// out (it may complete with more bytes). Returns how many bytes of `bytes` were consumed.
size_t append_lossy(std::string& out, std::string_view bytes, bool final);

// `bytes` with every ill-formed subsequence replaced by U+FFFD.
std::string to_valid(std::string_view bytes);

void append_code_point(std::string& out, char32_t code_point);

// The Unicode White_Space property (the set Rust's char::is_whitespace and Oniguruma's \s use).
bool is_white_space(char32_t code_point);

}  // namespace longctx::text::utf8

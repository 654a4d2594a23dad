// GPT-2's byte-level alphabet: a reversible map from the 256 byte values to printable Unicode
// characters, so that byte-level BPE vocabularies can be stored as text (space is "Ġ", newline
// "Ċ"). Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100 onward.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace longctx::text::byte_level {

// UTF-8 of the character that stands for `byte`.
std::string_view char_for_byte(uint8_t byte);

// The byte that `code_point` stands for, if it is in the alphabet.
std::optional<uint8_t> byte_for_char(char32_t code_point);

// Maps every byte of `bytes` to its character.
std::string encode(std::string_view bytes);

// Decodes one token the way the ByteLevel decoder of `tokenizers` does: when every character
// of `token` is in the alphabet, the bytes they stand for; otherwise `token` unchanged.
std::string decode_token(std::string_view token);

}  // namespace longctx::text::byte_level

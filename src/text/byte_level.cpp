#include "text/byte_level.h"

#include <array>

#include "text/utf8.h"

namespace longctx::text::byte_level {
namespace {

bool maps_to_itself(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
         (byte >= 0xAE && byte <= 0xFF);
}

struct Tables {
  std::array<std::string, 256> char_for_byte;
  std::array<char32_t, 256> code_point_for_byte;

  Tables() {
    // Bytes that are not printable take the code points U+0100, U+0101, ... in byte order.
    char32_t next_extra = 0x100;
    for (int byte = 0; byte < 256; ++byte) {
      const char32_t code_point = maps_to_itself(byte) ? static_cast<char32_t>(byte) : next_extra++;
      code_point_for_byte[static_cast<size_t>(byte)] = code_point;
      utf8::append_code_point(char_for_byte[static_cast<size_t>(byte)], code_point);
    }
  }
};

const Tables& tables() {
  static const Tables instance;
  return instance;
}

}  // namespace

std::string_view char_for_byte(uint8_t byte) {
  return tables().char_for_byte[byte];
}

std::optional<uint8_t> byte_for_char(char32_t code_point) {
  // The alphabet spans U+0021..U+0143; invert the construction rather than searching.
  if (code_point < 0x100) {
    if (maps_to_itself(static_cast<int>(code_point))) return static_cast<uint8_t>(code_point);
    return std::nullopt;
  }
  if (code_point >= 0x100 + 68) return std::nullopt;
  const auto& code_points = tables().code_point_for_byte;
  for (int byte = 0; byte < 256; ++byte) {
    if (code_points[static_cast<size_t>(byte)] == code_point) return static_cast<uint8_t>(byte);
  }
  return std::nullopt;
}

std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char byte : bytes)
    out.append(char_for_byte(static_cast<uint8_t>(byte)));
  return out;
}

std::string decode_token(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  size_t at = 0;
  while (at < token.size()) {
    const utf8::Sequence sequence = utf8::decode_one(token.substr(at));
    if (sequence.status != utf8::SequenceStatus::kValid) return std::string(token);
    const std::optional<uint8_t> byte = byte_for_char(sequence.code_point);
    if (!byte) return std::string(token);
    bytes.push_back(static_cast<char>(*byte));
    at += sequence.length;
  }
  return bytes;
}

}  // namespace longctx::text::byte_level

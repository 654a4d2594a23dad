#include "text/utf8.h"

namespace longctx::text::utf8 {
namespace {

bool is_continuation(uint8_t byte) {
  return (byte & 0xC0) == 0x80;
}

}  // namespace

Sequence decode_one(std::string_view bytes) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint8_t lead = data[0];
  if (lead < 0x80) return {SequenceStatus::kValid, 1, lead};

  // Table 3-7 of the Unicode standard: the allowed range of the second byte depends on the
  // lead byte (this excludes overlong forms, surrogates and code points above U+10FFFF).
  size_t length = 0;
  uint8_t second_low = 0x80;
  uint8_t second_high = 0xBF;
  char32_t code_point = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    code_point = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    code_point = lead & 0x0F;
    if (lead == 0xE0) second_low = 0xA0;
    if (lead == 0xED) second_high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    code_point = lead & 0x07;
    if (lead == 0xF0) second_low = 0x90;
    if (lead == 0xF4) second_high = 0x8F;
  } else {
    return {SequenceStatus::kInvalid, 1, 0};
  }

  for (size_t i = 1; i < length; ++i) {
    if (i >= bytes.size()) return {SequenceStatus::kTruncated, i, 0};
    const uint8_t byte = data[i];
    const bool in_range =
        i == 1 ? (byte >= second_low && byte <= second_high) : is_continuation(byte);
    // The bytes read so far are the maximal ill-formed subsequence.
    if (!in_range) return {SequenceStatus::kInvalid, i, 0};
    code_point = (code_point << 6) | (byte & 0x3F);
  }
  return {SequenceStatus::kValid, length, code_point};
}

bool is_valid(std::string_view bytes) {
  size_t at = 0;
  while (at < bytes.size()) {
    // ASCII runs are the common case; skip them without decoding.
    if (static_cast<uint8_t>(bytes[at]) < 0x80) {
      ++at;
      continue;
    }
    const Sequence sequence = decode_one(bytes.substr(at));
    if (sequence.status != SequenceStatus::kValid) return false;
    at += sequence.length;
  }
  return true;
}

size_t append_lossy(std::string& out, std::string_view bytes, bool final) {
  size_t at = 0;
  while (at < bytes.size()) {
    if (static_cast<uint8_t>(bytes[at]) < 0x80) {
      out.push_back(bytes[at]);
      ++at;
      continue;
    }
    const Sequence sequence = decode_one(bytes.substr(at));
    switch (sequence.status) {
      case SequenceStatus::kValid:
        out.append(bytes.substr(at, sequence.length));
        break;
      case SequenceStatus::kTruncated:
        if (!final) return at;
        out.append(kReplacementCharacter);
        break;
      case SequenceStatus::kInvalid:
        out.append(kReplacementCharacter);
        break;
    }
    at += sequence.length;
  }
  return at;
}

std::string to_valid(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  append_lossy(out, bytes, /*final=*/true);
  return out;
}

void append_code_point(std::string& out, char32_t code_point) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

}  // namespace longctx::text::utf8

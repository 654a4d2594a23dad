// Reading a request body: JSON parsing with the limits a public endpoint needs, and typed access
// to fields whose errors (400) name the field and say what was expected and what was found.
// JSON null counts as absent, as in OpenAI's API.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/json_util.h"
#include "server/api_error.h"

namespace longctx::server {

// Deeper nesting than this is refused: the prompt renderers and serializers recurse.
inline constexpr int kMaxJsonDepth = 64;

// Parses a request body that must be a JSON object (keys keep their order: tool schemas are
// part of the prompt). Throws ApiError 400 for malformed JSON, invalid UTF-8, nesting deeper
// than kMaxJsonDepth, or a value that is not an object.
OrderedJson parse_request_body(std::string_view body);

// The fields of one JSON object; `prefix` ("stream_options.") makes error messages name nested
// fields by their full path.
class FieldReader {
 public:
  explicit FieldReader(const OrderedJson& object, std::string prefix = "");

  // The field, or null when absent or JSON null.
  const OrderedJson* find(std::string_view name) const;
  bool has(std::string_view name) const { return find(name) != nullptr; }
  std::string path(std::string_view name) const { return prefix_ + std::string(name); }

  std::optional<double> number(std::string_view name) const;
  std::optional<int64_t> integer(std::string_view name) const;  // integral numbers only
  std::optional<bool> boolean(std::string_view name) const;
  std::optional<std::string> string(std::string_view name) const;
  const OrderedJson* object(std::string_view name) const;  // must be an object when present
  const OrderedJson* array(std::string_view name) const;   // must be an array when present

  // Throws a 400 naming `name` ("NAME must be EXPECTED, found KIND").
  [[noreturn]] void wrong_type(std::string_view name, std::string_view expected) const;

 private:
  const OrderedJson& object_;
  std::string prefix_;
};

}  // namespace longctx::server

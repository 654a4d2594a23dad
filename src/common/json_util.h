// Small helpers around nlohmann::json for files the engine reads: bounded parsing with
// errors that name the file.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace longctx {

using Json = nlohmann::json;

// Parses `text`; throws Error naming `what` (a file or a request part) if it is not JSON.
Json parse_json(const std::string& text, const std::string& what);
// Reads and parses a JSON file of at most max_bytes.
Json read_json_file(const std::string& path, size_t max_bytes);
// A short name for the JSON value's type, for error messages ("string", "integer", ...); for
// any nlohmann::basic_json (the server keeps key order with ordered_json).
template <class AnyJson>
std::string json_type_name(const AnyJson& value) {
  if (value.is_null()) return "null";
  if (value.is_boolean()) return "boolean";
  if (value.is_number_integer()) return "integer";
  if (value.is_number()) return "number";
  if (value.is_string()) return "string";
  if (value.is_array()) return "array";
  return "object";
}

}  // namespace longctx

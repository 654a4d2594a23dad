#include "common/json_util.h"

#include "common/mapped_file.h"
#include "longctx/error.h"

namespace longctx {

Json parse_json(const std::string& text, const std::string& what) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& error) {
    fail(what, " is not valid JSON: ", error.what());
  }
}

Json read_json_file(const std::string& path, size_t max_bytes) {
  return parse_json(read_text_file(path, max_bytes), path);
}

std::string json_type_name(const Json& value) {
  if (value.is_null()) return "null";
  if (value.is_boolean()) return "boolean";
  if (value.is_number_integer()) return "integer";
  if (value.is_number()) return "number";
  if (value.is_string()) return "string";
  if (value.is_array()) return "array";
  return "object";
}

}  // namespace longctx

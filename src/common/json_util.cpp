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

}  // namespace longctx

#include "server/json_fields.h"

#include <cmath>
#include <limits>

namespace longctx::server {

OrderedJson parse_request_body(std::string_view body) {
  if (body.empty())
    throw invalid_request("the request body is empty; expected a JSON object", "invalid_json");
  // The callback sees every value with its depth; refusing deep nesting here keeps the
  // recursive code after parsing (prompt rendering, serialization) within a bounded stack.
  const auto limit_depth = [](int depth, OrderedJson::parse_event_t, OrderedJson&) {
    if (depth > kMaxJsonDepth) {
      throw invalid_request(
          str_cat("the request body is nested deeper than ", kMaxJsonDepth, " levels"),
          "invalid_json");
    }
    return true;
  };
  OrderedJson parsed;
  try {
    parsed = OrderedJson::parse(body.begin(), body.end(), limit_depth);
  } catch (const OrderedJson::parse_error& error) {
    // nlohmann's message names the position and what it read ("invalid string: ill-formed
    // UTF-8 byte", "unexpected end of input", ...).
    std::string what = error.what();
    const size_t bracket = what.find("] ");
    if (bracket != std::string::npos) what = what.substr(bracket + 2);
    throw invalid_request(str_cat("the request body is not valid JSON: ", what), "invalid_json");
  }
  if (!parsed.is_object()) {
    throw invalid_request(
        str_cat("the request body must be a JSON object, found ", json_type_name(parsed)),
        "invalid_json");
  }
  return parsed;
}

FieldReader::FieldReader(const OrderedJson& object, std::string prefix)
    : object_(object), prefix_(std::move(prefix)) {}

const OrderedJson* FieldReader::find(std::string_view name) const {
  if (!object_.is_object()) return nullptr;
  const auto it = object_.find(std::string(name));
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

void FieldReader::wrong_type(std::string_view name, std::string_view expected) const {
  const OrderedJson* value = find(name);
  throw invalid_field(path(name), str_cat(path(name), " must be ", expected, ", found ",
                                          value ? json_type_name(*value) : "null"));
}

std::optional<double> FieldReader::number(std::string_view name) const {
  const OrderedJson* value = find(name);
  if (!value) return std::nullopt;
  if (!value->is_number()) wrong_type(name, "a number");
  const double number = value->get<double>();
  if (!std::isfinite(number)) wrong_type(name, "a finite number");
  return number;
}

std::optional<int64_t> FieldReader::integer(std::string_view name) const {
  const OrderedJson* value = find(name);
  if (!value) return std::nullopt;
  if (value->is_number_integer()) {
    if (value->is_number_unsigned() &&
        value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw invalid_field(path(name), str_cat(path(name), " is too large: ", value->dump()));
    }
    return value->get<int64_t>();
  }
  if (value->is_number_float()) {
    // 16.0 is accepted as 16, as Python clients sometimes send it; 16.5 is not an integer.
    const double number = value->get<double>();
    if (std::isfinite(number) && std::floor(number) == number && std::fabs(number) < 9.0e15) {
      return static_cast<int64_t>(number);
    }
    throw invalid_field(path(name),
                        str_cat(path(name), " must be an integer, found ", value->dump()));
  }
  wrong_type(name, "an integer");
}

std::optional<bool> FieldReader::boolean(std::string_view name) const {
  const OrderedJson* value = find(name);
  if (!value) return std::nullopt;
  if (!value->is_boolean()) wrong_type(name, "a boolean");
  return value->get<bool>();
}

std::optional<std::string> FieldReader::string(std::string_view name) const {
  const OrderedJson* value = find(name);
  if (!value) return std::nullopt;
  if (!value->is_string()) wrong_type(name, "a string");
  return value->get<std::string>();
}

const OrderedJson* FieldReader::object(std::string_view name) const {
  const OrderedJson* value = find(name);
  if (value && !value->is_object()) wrong_type(name, "an object");
  return value;
}

const OrderedJson* FieldReader::array(std::string_view name) const {
  const OrderedJson* value = find(name);
  if (value && !value->is_array()) wrong_type(name, "an array");
  return value;
}

}  // namespace longctx::server

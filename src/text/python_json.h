// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it, because the V4
// prompt embeds tool schemas and tool-call arguments serialized that way: ", " and ": "
// separators, keys in insertion order, non-ASCII kept as is, control characters as \u00XX,
// floats as Python's repr (1.0, 1e-05, 1e+16).
//
// Key order only survives with nlohmann::ordered_json; parse requests with it.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace longctx::text {

using OrderedJson = nlohmann::ordered_json;

std::string python_json_dumps(const OrderedJson& value);
std::string python_json_dumps(const nlohmann::json& value);

// Appends `text` as a JSON string literal (with the quotes).
void append_python_json_string(std::string& out, std::string_view text);

// Python's repr() of a float.
std::string python_float_repr(double value);

}  // namespace longctx::text

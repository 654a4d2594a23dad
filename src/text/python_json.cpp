#include "text/python_json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace longctx::text {
namespace {

template <typename JsonType>
void append_value(std::string& out, const JsonType& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
      out.append("null");
      break;
    case nlohmann::json::value_t::boolean:
      out.append(value.template get<bool>() ? "true" : "false");
      break;
    case nlohmann::json::value_t::number_integer:
      out.append(std::to_string(value.template get<int64_t>()));
      break;
    case nlohmann::json::value_t::number_unsigned:
      out.append(std::to_string(value.template get<uint64_t>()));
      break;
    case nlohmann::json::value_t::number_float:
      out.append(python_float_repr(value.template get<double>()));
      break;
    case nlohmann::json::value_t::string:
      append_python_json_string(out, value.template get_ref<const std::string&>());
      break;
    case nlohmann::json::value_t::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& element : value) {
        if (!first) out.append(", ");
        first = false;
        append_value(out, element);
      }
      out.push_back(']');
      break;
    }
    case nlohmann::json::value_t::object: {
      out.push_back('{');
      bool first = true;
      for (auto it = value.begin(); it != value.end(); ++it) {
        if (!first) out.append(", ");
        first = false;
        append_python_json_string(out, it.key());
        out.append(": ");
        append_value(out, it.value());
      }
      out.push_back('}');
      break;
    }
    case nlohmann::json::value_t::binary:
      out.append("null");
      break;
  }
}

}  // namespace

void append_python_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      default:
        if (static_cast<uint8_t>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned>(c));
          out.append(escaped);
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  if (value == 0.0) return std::signbit(value) ? "-0.0" : "0.0";

  // Shortest round-trip digits, then Python's layout: positional when the decimal exponent
  // is in [-4, 16), scientific otherwise.
  char buffer[64];
  const auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  const std::string scientific(buffer, result.ptr);  // "-d.ddde+XX"
  const size_t e = scientific.find('e');
  std::string mantissa = scientific.substr(0, e);
  const int exponent = std::atoi(scientific.c_str() + e + 1);
  std::string sign;
  if (mantissa[0] == '-') {
    sign = "-";
    mantissa.erase(0, 1);
  }
  std::string digits;
  for (const char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  const int point = exponent + 1;  // digits before the decimal point
  std::string out = sign;
  if (exponent < -4 || exponent >= 16) {
    out.push_back(digits[0]);
    if (digits.size() > 1) out.append(".").append(digits, 1, std::string::npos);
    char exponent_text[16];
    std::snprintf(exponent_text, sizeof(exponent_text), "e%c%02d", exponent < 0 ? '-' : '+',
                  std::abs(exponent));
    out.append(exponent_text);
  } else if (point <= 0) {
    out.append("0.").append(static_cast<size_t>(-point), '0').append(digits);
  } else if (static_cast<size_t>(point) >= digits.size()) {
    out.append(digits).append(static_cast<size_t>(point) - digits.size(), '0').append(".0");
  } else {
    out.append(digits, 0, static_cast<size_t>(point))
        .append(".")
        .append(digits, static_cast<size_t>(point), std::string::npos);
  }
  return out;
}

std::string python_json_dumps(const OrderedJson& value) {
  std::string out;
  append_value(out, value);
  return out;
}

std::string python_json_dumps(const nlohmann::json& value) {
  std::string out;
  append_value(out, value);
  return out;
}

}  // namespace longctx::text

// Errors of the longctx library: one exception type whose message says what was expected and
// what was found. Callers at the edges (CLI, HTTP) catch it and report the message.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace longctx {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Concatenates its arguments with operator<< into one string.
template <typename... Parts>
std::string str_cat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

// Throws an Error whose message is the concatenation of the arguments.
template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(str_cat(std::forward<Parts>(parts)...));
}

}  // namespace longctx

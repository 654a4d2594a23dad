#include "args.h"

#include <cerrno>
#include <cstdlib>

#include "longctx/error.h"

namespace longctx::cli {

Args::Args(const std::vector<std::string>& argv, const std::set<std::string>& switches) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      const size_t equals = arg.find('=');
      std::string flag = arg.substr(2, equals == std::string::npos ? std::string::npos : equals - 2);
      if (equals != std::string::npos) {
        values_[flag] = arg.substr(equals + 1);
      } else if (switches.count(flag)) {
        values_[flag] = "true";
      } else {
        if (i + 1 >= argv.size()) fail("--", flag, " needs a value");
        values_[flag] = argv[++i];
      }
    } else {
      positional_.push_back(arg);
    }
  }
}

bool Args::has(const std::string& flag) const { return values_.count(flag) != 0; }

std::optional<std::string> Args::get(const std::string& flag) const {
  const auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::get_or(const std::string& flag, const std::string& fallback) const {
  return get(flag).value_or(fallback);
}

std::string Args::require(const std::string& flag) const {
  const auto value = get(flag);
  if (!value) fail("missing required flag --", flag);
  return *value;
}

int64_t Args::get_int(const std::string& flag, int64_t fallback) const {
  const auto value = get(flag);
  if (!value) return fallback;
  errno = 0;
  char* end = nullptr;
  const long long parsed = std::strtoll(value->c_str(), &end, 10);
  if (value->empty() || *end != '\0' || errno != 0) {
    fail("--", flag, " must be an integer, got '", *value, "'");
  }
  return parsed;
}

double Args::get_double(const std::string& flag, double fallback) const {
  const auto value = get(flag);
  if (!value) return fallback;
  errno = 0;
  char* end = nullptr;
  const double parsed = std::strtod(value->c_str(), &end);
  if (value->empty() || *end != '\0' || errno != 0) {
    fail("--", flag, " must be a number, got '", *value, "'");
  }
  return parsed;
}

void Args::check_known(const std::set<std::string>& known) const {
  for (const auto& [flag, value] : values_) {
    if (!known.count(flag)) fail("unknown flag --", flag);
  }
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what) {
  std::vector<int64_t> values;
  size_t at = 0;
  while (at <= text.size()) {
    size_t comma = text.find(',', at);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(at, comma - at);
    const size_t first = item.find_first_not_of(" \t");
    const size_t last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    if (item.empty()) {
      if (comma == text.size() && !values.empty()) break;
      fail(what, ": empty entry in '", text, "'");
    }
    errno = 0;
    char* end = nullptr;
    const long long value = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || errno != 0) fail(what, ": '", item, "' is not an integer");
    values.push_back(value);
    at = comma + 1;
  }
  return values;
}

}  // namespace longctx::cli

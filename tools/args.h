// A small command-line parser for the subcommands: --flag value, --flag=value, boolean
// switches and positional arguments, with errors that name the flag.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace longctx::cli {

class Args {
 public:
  // `switches` are flags that take no value; every other --flag takes one.
  Args(const std::vector<std::string>& argv, const std::set<std::string>& switches);

  bool has(const std::string& flag) const;
  std::optional<std::string> get(const std::string& flag) const;
  std::string get_or(const std::string& flag, const std::string& fallback) const;
  std::string require(const std::string& flag) const;
  int64_t get_int(const std::string& flag, int64_t fallback) const;
  double get_double(const std::string& flag, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // Fails if a flag outside `known` was given.
  void check_known(const std::set<std::string>& known) const;

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// Parses "1,2,3" (spaces allowed) into integers.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what);

}  // namespace longctx::cli

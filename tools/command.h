// The `longctx` CLI: each subcommand lives in its own cmd_*.cpp and registers itself here.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace longctx::cli {

using CommandMain = std::function<int(const std::vector<std::string>& args)>;

struct Command {
  std::string name;
  std::string summary;  // one line for `longctx --help`
  CommandMain run;
};

// Registers a command at static-initialization time; see the REGISTER lines in cmd_*.cpp.
struct CommandRegistration {
  CommandRegistration(std::string name, std::string summary, CommandMain run);
};

const std::vector<Command>& all_commands();

}  // namespace longctx::cli

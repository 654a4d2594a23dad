// Entry point of the `longctx` CLI: dispatches to the registered subcommands.
#include <cstdio>
#include <string>
#include <vector>

#include "command.h"
#include "longctx/error.h"

namespace longctx::cli {
namespace {

std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}

void print_usage() {
  std::printf("usage: longctx <command> [options]\n\ncommands:\n");
  for (const Command& command : all_commands()) {
    std::printf("  %-18s %s\n", command.name.c_str(), command.summary.c_str());
  }
  std::printf("\n`longctx <command> --help` describes a command's options.\n");
}

}  // namespace

CommandRegistration::CommandRegistration(std::string name, std::string summary, CommandMain run) {
  registry().push_back({std::move(name), std::move(summary), std::move(run)});
}

const std::vector<Command>& all_commands() { return registry(); }

}  // namespace longctx::cli

int main(int argc, char** argv) {
  using namespace longctx::cli;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  for (const Command& command : all_commands()) {
    if (command.name != name) continue;
    try {
      return command.run(std::vector<std::string>(argv + 2, argv + argc));
    } catch (const longctx::Error& error) {
      std::fprintf(stderr, "longctx %s: error: %s\n", name.c_str(), error.what());
      return 1;
    } catch (const std::exception& error) {
      std::fprintf(stderr, "longctx %s: internal error: %s\n", name.c_str(), error.what());
      return 1;
    }
  }
  std::fprintf(stderr, "longctx: unknown command '%s'\n\n", name.c_str());
  print_usage();
  return 2;
}

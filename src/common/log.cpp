#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace longctx::log {
namespace {

Level level_from_env() {
  const char* value = std::getenv("LONGCTX_LOG_LEVEL");
  if (value == nullptr) return Level::kInfo;
  if (std::strcmp(value, "debug") == 0) return Level::kDebug;
  if (std::strcmp(value, "warning") == 0) return Level::kWarning;
  if (std::strcmp(value, "error") == 0) return Level::kError;
  if (std::strcmp(value, "off") == 0) return Level::kOff;
  return Level::kInfo;
}

std::atomic<Level> g_level{level_from_env()};
std::mutex g_write_mutex;

const char* tag(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarning: return "warning";
    case Level::kError: return "error";
    case Level::kOff: break;
  }
  return "";
}

}  // namespace

void set_level(Level new_level) { g_level.store(new_level); }
Level level() { return g_level.load(std::memory_order_relaxed); }

void write(Level message_level, const std::string& message) {
  std::lock_guard<std::mutex> lock(g_write_mutex);
  std::fprintf(stderr, "longctx %s: %s\n", tag(message_level), message.c_str());
}

}  // namespace longctx::log

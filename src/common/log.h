// Minimal leveled logging to stderr, safe to call from any thread.
#pragma once

#include <string>

#include "longctx/error.h"

namespace longctx::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

void set_level(Level level);
Level level();
void write(Level level, const std::string& message);

template <typename... Parts>
void debug(Parts&&... parts) {
  if (level() <= Level::kDebug) write(Level::kDebug, str_cat(std::forward<Parts>(parts)...));
}
template <typename... Parts>
void info(Parts&&... parts) {
  if (level() <= Level::kInfo) write(Level::kInfo, str_cat(std::forward<Parts>(parts)...));
}
template <typename... Parts>
void warn(Parts&&... parts) {
  if (level() <= Level::kWarning) write(Level::kWarning, str_cat(std::forward<Parts>(parts)...));
}
template <typename... Parts>
void error(Parts&&... parts) {
  if (level() <= Level::kError) write(Level::kError, str_cat(std::forward<Parts>(parts)...));
}

}  // namespace longctx::log

#include "engine/stop_checker.h"

#include <algorithm>

namespace longctx {
namespace {

// Moves `cut` back so it does not split a UTF-8 character.
size_t character_boundary(const std::string& text, size_t cut) {
  while (cut > 0 && cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}

}  // namespace

StopStringChecker::StopStringChecker(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const std::string& stop : stops_) hold_ = std::max(hold_, stop.size() - 1);
}

std::string StopStringChecker::push(std::string_view text, std::string* stop) {
  held_.append(text);
  size_t earliest = std::string::npos;
  for (const std::string& candidate : stops_) {
    const size_t at = held_.find(candidate);
    if (at != std::string::npos && at < earliest) {
      earliest = at;
      *stop = candidate;
    }
  }
  if (earliest != std::string::npos) {
    std::string out = held_.substr(0, earliest);
    held_.clear();
    return out;
  }
  if (held_.size() <= hold_) return {};
  const size_t cut = character_boundary(held_, held_.size() - hold_);
  std::string out = held_.substr(0, cut);
  held_.erase(0, cut);
  return out;
}

std::string StopStringChecker::flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace longctx

// Finds stop strings in streamed text without letting any of their bytes reach the output: the
// tail that could still be the start of a stop string is held back until it cannot.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace longctx {

class StopStringChecker {
 public:
  explicit StopStringChecker(std::vector<std::string> stops);

  // Adds text; returns the text now safe to emit. When a stop string completes, *stop gets it
  // and the returned text ends right before it.
  std::string push(std::string_view text, std::string* stop);
  // The held-back text, at the end of a sequence that did not stop on a string.
  std::string flush();

 private:
  std::vector<std::string> stops_;
  size_t hold_ = 0;  // longest stop string - 1
  std::string held_;
};

}  // namespace longctx

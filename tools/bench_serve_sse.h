// Server-sent events as OpenAI streams them: "data: {...}\n\n" events, ": comment" keep-alive
// lines, and "data: [DONE]" at the end. The reader takes the bytes as they arrive, split
// anywhere, and hands out the data of each complete event.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace longctx::cli {

class SseDataReader {
 public:
  // Called with the data of each complete event (its data lines joined by '\n'); returning
  // false stops reading.
  using OnData = std::function<bool(std::string_view data)>;

  // Feeds the next bytes of the stream; false when on_data asked to stop.
  bool feed(std::string_view bytes, const OnData& on_data);
  // At the end of the stream: hands out an event the server ended without its blank line.
  bool finish(const OnData& on_data);

 private:
  bool take_line(std::string_view line, const OnData& on_data);

  std::string pending_;  // bytes of a line not yet ended
  std::string data_;     // data lines of the event being read
  bool has_data_ = false;
};

}  // namespace longctx::cli

#include "bench_serve_sse.h"

namespace longctx::cli {

bool SseDataReader::feed(std::string_view bytes, const OnData& on_data) {
  pending_.append(bytes);
  size_t start = 0;
  bool keep_reading = true;
  while (keep_reading) {
    const size_t newline = pending_.find('\n', start);
    if (newline == std::string::npos) break;
    std::string_view line(pending_.data() + start, newline - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    keep_reading = take_line(line, on_data);
    start = newline + 1;
  }
  pending_.erase(0, start);
  return keep_reading;
}

bool SseDataReader::finish(const OnData& on_data) {
  if (!pending_.empty()) {
    std::string line = std::move(pending_);
    pending_.clear();
    if (line.back() == '\r') line.pop_back();
    if (!take_line(line, on_data)) return false;
  }
  return take_line("", on_data);
}

bool SseDataReader::take_line(std::string_view line, const OnData& on_data) {
  if (line.empty()) {  // the blank line that ends an event
    if (!has_data_) return true;
    has_data_ = false;
    const std::string data = std::move(data_);
    data_.clear();
    return on_data(data);
  }
  if (line.front() == ':') return true;  // a comment: servers send them to keep idle streams open
  const size_t colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  if (field != "data") return true;  // event:, id:, retry: carry nothing the benchmark reads
  std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (has_data_) data_ += '\n';
  data_.append(value);
  has_data_ = true;
  return true;
}

}  // namespace longctx::cli

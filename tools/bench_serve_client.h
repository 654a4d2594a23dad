// One connection to the server under test and the streamed requests sent over it, each
// timed: when its first output chunk came, the gaps between output chunks, when it ended, and
// the token counts of the stream's usage. A request that is refused, times out or whose stream
// breaks comes back as a failed record with the reason, never as an exception.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench_serve_dataset.h"
#include "bench_serve_options.h"

namespace httplib {
class Client;
}

namespace longctx::cli {

using BenchClock = std::chrono::steady_clock;

struct RequestRecord {
  bool success = false;
  int http_status = 0;        // 0 when no response came
  std::string error;          // why it failed
  double start_s = 0;         // when it was sent, from the start of the benchmark
  double ttft_s = 0;          // to the first chunk with output
  double e2el_s = 0;          // to the end of the stream
  std::vector<double> itl_s;  // gaps between successive chunks with output
  int64_t input_tokens = 0;   // usage.prompt_tokens, else the prompt's own count
  int64_t output_tokens = 0;  // usage.completion_tokens, else output chunks
  int64_t output_chunks = 0;  // chunks that carried output
  bool usage_reported = false;
  bool stream_completed = false;  // HTTP 200 and "data: [DONE]" with no error on the way
};

class BenchServeClient {
 public:
  // `model` goes into every request body (it may be empty only for list_models()).
  BenchServeClient(const BenchServeOptions& options, std::string model);
  ~BenchServeClient();
  BenchServeClient(const BenchServeClient&) = delete;
  BenchServeClient& operator=(const BenchServeClient&) = delete;

  // GET /v1/models: the served ids. Throws longctx::Error saying why the server could not be
  // asked (unreachable, refused, not an OpenAI server).
  std::vector<std::string> list_models();

  // Sends `prompt` streamed and times it; `epoch` is the benchmark's start.
  RequestRecord send(const BenchPrompt& prompt, BenchClock::time_point epoch);

 private:
  std::string request_body(const BenchPrompt& prompt) const;
  RequestRecord send_once(const std::string& body, BenchClock::time_point epoch,
                          bool* nothing_received);

  const BenchServeOptions& options_;
  std::string model_;
  std::unique_ptr<httplib::Client> http_;
  // Whether the last exchange left a kept-alive connection, which the server may have closed
  // meanwhile.
  bool connection_reused_ = false;
};

}  // namespace longctx::cli

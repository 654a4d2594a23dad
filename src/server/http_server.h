// The OpenAI-compatible HTTP server over one Engine: POST /v1/chat/completions and
// /v1/completions (JSON or SSE streaming), GET /v1/models, /health, /metrics, /version,
// POST /tokenize and /detokenize. HTTP comes from cpp-httplib (one thread per connection);
// this header keeps it out of its users.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "longctx/engine.h"
#include "server/server_options.h"

namespace longctx::text {
class Tokenizer;
}

namespace longctx::server {

class OpenAiServer {
 public:
  // `tokenizer` may be null: completions with token ids only.
  OpenAiServer(std::shared_ptr<Engine> engine, std::shared_ptr<const text::Tokenizer> tokenizer,
               ServerOptions options);
  // Stops as shutdown(0) would.
  ~OpenAiServer();
  OpenAiServer(const OpenAiServer&) = delete;
  OpenAiServer& operator=(const OpenAiServer&) = delete;

  // Binds host:port and serves on background threads; returns the bound port. Throws Error when
  // the address cannot be bound. Ignores SIGPIPE process-wide: a write to a client that went
  // away must fail, not kill the server.
  int start();
  int port() const;
  std::string url() const;  // http://HOST:PORT

  // Graceful stop: stop_accepting(), up to `grace` for in-flight requests to finish,
  // abort_inflight(), wait().
  void shutdown(std::chrono::milliseconds grace);

  // The steps of shutdown, for callers that watch signals in between.
  // New requests get 503 and the listening socket closes.
  void stop_accepting();
  // Generation requests that have not sent their last byte.
  int64_t inflight_requests() const;
  // Aborts every in-flight generation; their responses end with finish_reason "abort".
  void abort_inflight();
  // Waits for the connection threads to end (idle keep-alive connections close within
  // keep_alive_timeout_seconds).
  void wait();

  // The HTTP layer's own counters (also exported by /metrics).
  int64_t client_disconnects() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace longctx::server

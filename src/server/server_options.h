// How `longctx serve` configures the HTTP server (the engine has its own EngineOptions).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace longctx::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: a free port chosen by the OS (OpenAiServer::port() tells which)
  // Names clients may use in "model"; the first one is reported when a request names none.
  std::vector<std::string> served_model_names = {"longctx"};
  std::string model_root;  // the checkpoint folder, reported as "root" by /v1/models
  // The model's vocabulary (config.json vocab_size), to name bad token ids in a 400; 0 leaves
  // the check to the engine.
  int64_t vocab_size = 0;
  std::string api_key;  // empty: no authentication; else /v1/* need "Authorization: Bearer KEY"
  size_t max_body_bytes = size_t{64} << 20;  // larger bodies get 413
  // Connections served at once (one thread each; later ones wait for a thread). 0: the engine's
  // max_num_seqs + max_waiting_requests + 16, so that a full engine answers 429 instead of
  // leaving connections unserved.
  int http_threads = 0;
  int retry_after_seconds = 1;  // Retry-After of 429 / 503
  // A stream with nothing to send writes an SSE comment this often: a client that went away is
  // noticed (and its request aborted) even while its request waits or reasons silently.
  std::chrono::milliseconds heartbeat_interval{200};
  int keep_alive_timeout_seconds = 5;
};

}  // namespace longctx::server

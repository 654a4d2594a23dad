// What the endpoint handlers share: the engine, the tokenizer, the options, the in-flight
// requests and the counters. Internal to src/server; the handlers throw ApiError and the
// server (http_server.cpp) renders it.
#pragma once

#include <httplib.h>

#include <atomic>
#include <memory>
#include <string>

#include "longctx/engine.h"
#include "server/api_error.h"
#include "server/inflight_registry.h"
#include "server/openai_request.h"
#include "server/server_options.h"

namespace longctx::server {

struct ServerState {
  std::shared_ptr<Engine> engine;
  std::shared_ptr<const text::Tokenizer> tokenizer;
  ServerOptions options;
  ModelLimits limits;
  int64_t started_at = 0;  // unix seconds, the "created" of /v1/models
  InflightRegistry inflight;
  std::atomic<bool> draining{false};  // shutting down: no new requests
  std::atomic<bool> aborting{false};  // shutting down: in-flight requests are being aborted
  std::atomic<int64_t> refused_queue_full{0};
  std::atomic<int64_t> refused_shutting_down{0};
  std::atomic<int64_t> client_disconnects{0};

  // The served name that a request's "model" refers to ("" means the default); 404 for any
  // other name.
  std::string resolve_model(const std::string& requested) const;
};

// One request as the handlers see it: httplib's request (headers, path matches) and the body,
// read by the server within its size limit.
struct HttpCall {
  const httplib::Request& request;
  std::string body;
};

// POST /v1/chat/completions, /v1/completions (generation_endpoint.cpp).
void handle_generation(ServerState& state, ApiKind kind, const HttpCall& call,
                       httplib::Response& response);
// The others (info_endpoints.cpp).
void handle_models(ServerState& state, const HttpCall& call, httplib::Response& response);
void handle_model(ServerState& state, const HttpCall& call, httplib::Response& response);
void handle_health(ServerState& state, const HttpCall& call, httplib::Response& response);
void handle_metrics(ServerState& state, const HttpCall& call, httplib::Response& response);
void handle_version(ServerState& state, const HttpCall& call, httplib::Response& response);
void handle_tokenize(ServerState& state, const HttpCall& call, httplib::Response& response);
void handle_detokenize(ServerState& state, const HttpCall& call, httplib::Response& response);

// Serializes a response; text that is not valid UTF-8 is repaired, never a reason to fail.
std::string json_text(const OrderedJson& value);
void send_json(httplib::Response& response, int status, const OrderedJson& body);
// The error's status and JSON; 429 and 503 also say when to retry.
void send_error(httplib::Response& response, const ApiError& error, int retry_after_seconds);

// 503 while the server shuts down.
ApiError shutting_down_error();

}  // namespace longctx::server

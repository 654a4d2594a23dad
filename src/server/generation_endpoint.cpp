// POST /v1/chat/completions and /v1/completions: parse, submit to the engine, answer with one
// JSON object or an SSE stream. A streaming request whose client goes away is aborted as soon
// as a write fails; an idle stream writes SSE comments so that this happens within
// options.heartbeat_interval even when no token is due.
#include <chrono>
#include <ctime>

#include "server/json_fields.h"
#include "server/random_id.h"
#include "server/response_builder.h"
#include "server/server_state.h"

namespace longctx::server {
namespace {

using Clock = std::chrono::steady_clock;

std::shared_ptr<RequestHandle> submit(ServerState& state, GenerationRequest generation) {
  try {
    return state.engine->submit(std::move(generation));
  } catch (const QueueFullError& error) {
    ++state.refused_queue_full;
    throw ApiError(429, "rate_limit_error",
                   str_cat("the server is at capacity: ", error.what(), "; retry later"), "",
                   "queue_full");
  } catch (const Error& error) {
    // The engine refuses requests once it is stopping; anything else is a request it rejects.
    if (state.draining ||
        std::string_view(error.what()).find("shutting down") != std::string_view::npos) {
      ++state.refused_shutting_down;
      throw shutting_down_error();
    }
    throw invalid_request(error.what());
  }
}

// One SSE response. Lives as long as httplib keeps the response, so a stream that ends early
// (client gone, server stopping) still aborts its request when httplib drops it.
class StreamSession {
 public:
  StreamSession(ServerState& state, std::shared_ptr<RequestHandle> handle,
                std::unique_ptr<ResponseBuilder> builder, InflightRegistry::Ticket ticket,
                bool include_usage)
      : state_(state),
        handle_(std::move(handle)),
        builder_(std::move(builder)),
        ticket_(std::move(ticket)),
        include_usage_(include_usage) {}

  ~StreamSession() {
    if (!builder_->finished()) handle_->abort();
  }

  // Writes the whole stream; false when the client went away (httplib then closes).
  bool run(httplib::DataSink& sink) {
    const auto send = [&](const std::string& text) { return sink.write(text.data(), text.size()); };
    const auto send_chunk = [&](const OrderedJson& chunk) {
      return send("data: " + json_text(chunk) + "\n\n");
    };
    for (const OrderedJson& chunk : builder_->start_chunks()) {
      if (!send_chunk(chunk)) return client_gone();
    }
    const auto heartbeat = state_.options.heartbeat_interval;
    const auto poll = std::min<std::chrono::milliseconds>(heartbeat, std::chrono::milliseconds(50));
    Clock::time_point last_write = Clock::now();
    RequestEvent event;
    while (!builder_->finished()) {
      if (!handle_->next(&event, poll)) {
        if (Clock::now() - last_write >= heartbeat) {
          if (!send(": keep-alive\n\n")) return client_gone();
          last_write = Clock::now();
        }
        continue;
      }
      for (const OrderedJson& chunk : builder_->add(event)) {
        if (!send_chunk(chunk)) return client_gone();
        last_write = Clock::now();
      }
    }
    if (!builder_->error().empty()) {
      // Headers are gone: the failure travels as an error event, which OpenAI's clients raise.
      send_chunk(server_failure(str_cat("generation failed: ", builder_->error())).to_json());
    } else if (include_usage_) {
      send_chunk(builder_->usage_chunk());
    }
    send("data: [DONE]\n\n");
    sink.done();
    ticket_ = InflightRegistry::Ticket();
    return true;
  }

 private:
  bool client_gone() {
    handle_->abort();  // frees its KV now, not when generation would have ended
    ++state_.client_disconnects;
    return false;
  }

  ServerState& state_;
  std::shared_ptr<RequestHandle> handle_;
  std::unique_ptr<ResponseBuilder> builder_;
  InflightRegistry::Ticket ticket_;
  bool include_usage_;
};

}  // namespace

void handle_generation(ServerState& state, ApiKind kind, const HttpCall& call,
                       httplib::Response& response) {
  if (state.draining) {
    ++state.refused_shutting_down;
    throw shutting_down_error();
  }
  const OrderedJson body = parse_request_body(call.body);
  const std::string model = state.resolve_model(requested_model(body));
  InferenceRequest request = kind == ApiKind::kChatCompletion
                                 ? parse_chat_request(body, state.limits)
                                 : parse_completion_request(body, state.limits);
  ResponseMeta meta;
  meta.id = random_id(kind == ApiKind::kChatCompletion ? "chatcmpl-" : "cmpl-");
  meta.model = model;
  meta.created = static_cast<int64_t>(std::time(nullptr));
  meta.tokenizer = state.tokenizer.get();
  request.generation.id = meta.id;

  std::shared_ptr<RequestHandle> handle = submit(state, std::move(request.generation));
  InflightRegistry::Ticket ticket = state.inflight.add(handle);
  // Shutdown may have aborted everything in flight between the checks above and add().
  if (state.aborting) handle->abort();
  std::unique_ptr<ResponseBuilder> builder = make_response_builder(request, meta);

  if (!request.stream) {
    RequestEvent event;
    while (!builder->finished()) {
      if (handle->next(&event, std::chrono::seconds(1))) builder->add(event);
    }
    if (!builder->error().empty())
      throw server_failure(str_cat("generation failed: ", builder->error()));
    send_json(response, 200, builder->response());
    return;
  }
  auto session = std::make_shared<StreamSession>(state, std::move(handle), std::move(builder),
                                                 std::move(ticket), request.include_usage);
  response.status = 200;
  response.set_header("Cache-Control", "no-cache");
  response.set_chunked_content_provider(
      "text/event-stream",
      [session](size_t, httplib::DataSink& sink) { return session->run(sink); });
}

}  // namespace longctx::server

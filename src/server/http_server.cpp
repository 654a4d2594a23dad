// OpenAiServer: cpp-httplib wiring (routes, thread pool, body limit, authentication, error
// bodies) and the shutdown sequence.
#include "server/http_server.h"

#include <sys/socket.h>

#include <csignal>
#include <ctime>
#include <thread>

#include "common/log.h"
#include "server/server_state.h"
#include "text/tokenizer.h"

namespace longctx::server {

std::string json_text(const OrderedJson& value) {
  return value.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

void send_json(httplib::Response& response, int status, const OrderedJson& body) {
  response.status = status;
  response.set_content(json_text(body), "application/json");
}

void send_error(httplib::Response& response, const ApiError& error, int retry_after_seconds) {
  if (error.status() == 429 || error.status() == 503) {
    response.set_header("Retry-After", std::to_string(retry_after_seconds));
  }
  send_json(response, error.status(), error.to_json());
}

ApiError shutting_down_error() {
  return ApiError(503, "service_unavailable", "the server is shutting down", "", "shutting_down");
}

std::string ServerState::resolve_model(const std::string& requested) const {
  if (requested.empty()) return options.served_model_names.front();
  for (const std::string& name : options.served_model_names) {
    if (name == requested) return name;
  }
  throw model_not_found(requested);
}

namespace {

// Compares without an early exit, so response times do not reveal how much of a key matched.
bool same_secret(const std::string& given, const std::string& expected) {
  unsigned char difference = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) {
    difference |= static_cast<unsigned char>(given[i] ^ expected[i % expected.size()]);
  }
  return difference == 0;
}

}  // namespace

class OpenAiServer::Impl {
 public:
  Impl(std::shared_ptr<Engine> engine, std::shared_ptr<const text::Tokenizer> tokenizer,
       ServerOptions options) {
    if (!engine) fail("OpenAiServer needs an engine");
    if (options.served_model_names.empty())
      fail("OpenAiServer needs at least one served model name");
    state_.engine = std::move(engine);
    state_.tokenizer = std::move(tokenizer);
    state_.options = std::move(options);
    state_.limits.tokenizer = state_.tokenizer.get();
    state_.limits.max_model_len = state_.engine->max_model_len();
    state_.limits.vocab_size =
        state_.options.vocab_size > 0 ? state_.options.vocab_size : INT32_MAX;
    state_.started_at = static_cast<int64_t>(std::time(nullptr));
    configure();
  }

  ~Impl() {
    if (listener_.joinable()) shutdown(std::chrono::milliseconds(0));
  }

  int start() {
    // httplib 0.11 writes with plain send(): without this a client that hangs up mid-stream
    // would kill the process with SIGPIPE instead of failing the write.
    std::signal(SIGPIPE, SIG_IGN);
    const ServerOptions& options = state_.options;
    if (options.port == 0) {
      port_ = http_.bind_to_any_port(options.host);
    } else {
      port_ = http_.bind_to_port(options.host, options.port) ? options.port : -1;
    }
    if (port_ < 0) {
      fail("cannot listen on ", options.host, ":", options.port,
           " (the address is in use, or not an address of this machine)");
    }
    // httplib 0.11 listens with a backlog of 5 (compiled into Debian's library): a burst of
    // connections overflows the accept queue and clients see resets instead of a 429. Linux
    // applies a second listen() on the bound socket with the new backlog.
    if (listen_socket_ != INVALID_SOCKET) ::listen(listen_socket_, SOMAXCONN);
    listener_ = std::thread([this] { http_.listen_after_bind(); });
    // stop() is a no-op until the accept loop runs; wait for it so a quick shutdown works.
    for (int i = 0; i < 5000 && !http_.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return port_;
  }

  int port() const { return port_; }
  std::string url() const {
    const std::string& host = state_.options.host;
    const bool ipv6 = host.find(':') != std::string::npos;
    return str_cat("http://", ipv6 ? "[" : "", host, ipv6 ? "]" : "", ":", port_);
  }

  void stop_accepting() {
    state_.draining = true;
    http_.stop();
  }
  int64_t inflight_requests() const { return state_.inflight.count(); }
  void abort_inflight() {
    state_.aborting = true;
    state_.inflight.abort_all();
  }
  void wait() {
    if (listener_.joinable()) listener_.join();
  }
  void shutdown(std::chrono::milliseconds grace) {
    stop_accepting();
    state_.inflight.wait_until_empty(std::chrono::steady_clock::now() + grace);
    abort_inflight();
    wait();
  }
  int64_t client_disconnects() const { return state_.client_disconnects.load(); }

 private:
  using Handler = void (*)(ServerState&, const HttpCall&, httplib::Response&);

  void configure() {
    const ServerOptions& options = state_.options;
    const EngineOptions& engine = state_.engine->options();
    const size_t threads =
        options.http_threads > 0
            ? static_cast<size_t>(options.http_threads)
            : static_cast<size_t>(engine.max_num_seqs + engine.max_waiting_requests + 16);
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    http_.set_payload_max_length(options.max_body_bytes);
    http_.set_socket_options([this](socket_t socket) {
      httplib::default_socket_options(socket);
      listen_socket_ = socket;  // the last one set up is the one bound (start())
    });
    http_.set_keep_alive_timeout(options.keep_alive_timeout_seconds);
    http_.set_keep_alive_max_count(1000);
    http_.set_tcp_nodelay(true);  // SSE events leave at once
    // httplib's default also sets SO_REUSEPORT, which would let a second server bind the same
    // port and silently share its connections.
    http_.set_socket_options([](socket_t socket) {
      int yes = 1;
      ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    http_.set_error_handler([](const httplib::Request& request, httplib::Response& response) {
      // Statuses httplib sets itself (unknown route, body too large, unreadable request) get
      // an OpenAI error body too.
      if (response.body.empty() && !response.has_header("Content-Type")) {
        const ApiError error = error_for_status(response.status, request.method, request.path);
        response.set_content(json_text(error.to_json()), "application/json");
      }
    });
    http_.set_exception_handler(
        [](const httplib::Request&, httplib::Response& response, std::exception_ptr) {
          send_json(response, 500,
                    server_failure("internal error while handling the request").to_json());
        });

    http_.Post("/v1/chat/completions",
               post([](ServerState& state, const HttpCall& call, httplib::Response& response) {
                 handle_generation(state, ApiKind::kChatCompletion, call, response);
               }));
    http_.Post("/v1/completions",
               post([](ServerState& state, const HttpCall& call, httplib::Response& response) {
                 handle_generation(state, ApiKind::kCompletion, call, response);
               }));
    http_.Post("/tokenize", post(handle_tokenize));
    http_.Post("/detokenize", post(handle_detokenize));
    http_.Get("/v1/models", get(handle_models));
    http_.Get("/v1/models/(.+)", get(handle_model));
    http_.Get("/health", get(handle_health));
    http_.Get("/metrics", get(handle_metrics));
    http_.Get("/version", get(handle_version));
  }

  httplib::Server::Handler get(Handler handler) {
    return [this, handler](const httplib::Request& request, httplib::Response& response) {
      run_guarded(handler, HttpCall{request, ""}, response);
    };
  }

  // POST handlers read the body themselves: httplib 0.11 enforces its payload limit only on
  // bodies with a Content-Length, and a chunked body must not grow without bound either.
  httplib::Server::HandlerWithContentReader post(Handler handler) {
    return [this, handler](const httplib::Request& request, httplib::Response& response,
                           const httplib::ContentReader& reader) {
      HttpCall call{request, ""};
      const size_t limit = state_.options.max_body_bytes;
      bool too_large = false;
      const bool complete = reader([&](const char* data, size_t length) {
        if (call.body.size() + length > limit) {
          too_large = true;
          return false;
        }
        call.body.append(data, length);
        return true;
      });
      const int retry_after = state_.options.retry_after_seconds;
      if (too_large || response.status == 413) {
        return send_error(response, error_for_status(413, request.method, request.path),
                          retry_after);
      }
      if (!complete) {
        return send_error(
            response,
            invalid_request("the request body could not be read (malformed chunked encoding?)"),
            retry_after);
      }
      run_guarded(handler, call, response);
    };
  }

  // Runs a handler after the API key check for /v1/*, turning every exception into an OpenAI
  // error response (client mistakes arrive as ApiError 4xx; anything else is the server's 500).
  void run_guarded(Handler handler, const HttpCall& call, httplib::Response& response) {
    const httplib::Request& request = call.request;
    const int retry_after = state_.options.retry_after_seconds;
    try {
      authorize(request);
      handler(state_, call, response);
    } catch (const ApiError& error) {
      send_error(response, error, retry_after);
    } catch (const std::bad_alloc&) {
      send_error(response, server_failure("the server ran out of memory for this request"),
                 retry_after);
    } catch (const std::exception& error) {
      log::error("request ", request.method, " ", request.path, " failed: ", error.what());
      send_error(response, server_failure(str_cat("internal error: ", error.what())), retry_after);
    }
  }

  void authorize(const httplib::Request& request) const {
    const std::string& key = state_.options.api_key;
    if (key.empty() || request.path.rfind("/v1/", 0) != 0) return;
    const std::string header = request.get_header_value("Authorization");
    if (!same_secret(header, "Bearer " + key)) {
      throw ApiError(401, "authentication_error", "Incorrect API key provided.", "",
                     "invalid_api_key");
    }
  }

  ServerState state_;
  httplib::Server http_;
  std::thread listener_;
  int port_ = -1;
  socket_t listen_socket_ = INVALID_SOCKET;
};

OpenAiServer::OpenAiServer(std::shared_ptr<Engine> engine,
                           std::shared_ptr<const text::Tokenizer> tokenizer, ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(engine), std::move(tokenizer), std::move(options))) {}
OpenAiServer::~OpenAiServer() = default;
int OpenAiServer::start() {
  return impl_->start();
}
int OpenAiServer::port() const {
  return impl_->port();
}
std::string OpenAiServer::url() const {
  return impl_->url();
}
void OpenAiServer::shutdown(std::chrono::milliseconds grace) {
  impl_->shutdown(grace);
}
void OpenAiServer::stop_accepting() {
  impl_->stop_accepting();
}
int64_t OpenAiServer::inflight_requests() const {
  return impl_->inflight_requests();
}
void OpenAiServer::abort_inflight() {
  impl_->abort_inflight();
}
void OpenAiServer::wait() {
  impl_->wait();
}
int64_t OpenAiServer::client_disconnects() const {
  return impl_->client_disconnects();
}

}  // namespace longctx::server

// Helpers of the server tests: the tiny test model with its tokenizer, an engine and a server
// on a free loopback port, SSE parsing, and raw sockets for what an HTTP client library will not
// send (truncated bodies, hang-ups mid-stream).
#pragma once

#include <httplib.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "longctx/engine.h"
#include "server/http_server.h"
#include "text/python_json.h"

namespace longctx::text {
class Tokenizer;
}

namespace longctx::testing {

using text::OrderedJson;

// The tiny test model's folder, with the test tokenizer written into it (once per process).
const std::string& tiny_model_with_tokenizer();
std::shared_ptr<const text::Tokenizer> test_tokenizer();
// A real engine over the tiny model on the CPU (0.25 GiB of KV unless `options` says more).
std::shared_ptr<Engine> make_test_engine(EngineOptions options = {});

// An OpenAiServer on 127.0.0.1 at a port the OS picks; shut down (and joined) on destruction.
class TestServer {
 public:
  TestServer(std::shared_ptr<Engine> engine, server::ServerOptions options = {});
  ~TestServer();

  int port() const { return port_; }
  server::OpenAiServer& server() { return *server_; }
  Engine& engine() { return *engine_; }
  // A client with timeouts that bound every test request.
  std::unique_ptr<httplib::Client> client() const;

 private:
  std::shared_ptr<Engine> engine_;
  std::unique_ptr<server::OpenAiServer> server_;
  int port_ = 0;
};

// POSTs JSON and parses the reply (null when the body is not JSON).
struct JsonReply {
  int status = 0;
  OrderedJson body;
  std::string text;
  std::string retry_after;
};
JsonReply post_json(httplib::Client& client, const std::string& path, const std::string& body,
                    const httplib::Headers& headers = {});

// The JSON payloads of an SSE body's data lines, in order; `done` says whether the stream
// ended with "data: [DONE]".
std::vector<OrderedJson> sse_payloads(const std::string& body, bool* done);

// Whether an error body has OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
bool is_openai_error(const OrderedJson& body);

// A TCP connection to 127.0.0.1:port for hand-written requests.
class RawConnection {
 public:
  explicit RawConnection(int port);
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // False when the peer has gone (the write failed).
  bool send(const std::string& bytes);
  // Reads until `needle` has arrived, the peer closes, or the timeout passes; returns all
  // bytes read so far.
  std::string read_until(const std::string& needle, std::chrono::milliseconds timeout);
  void close();

 private:
  int fd_ = -1;
  std::string received_;
};

// Polls `condition` every few milliseconds until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

}  // namespace longctx::testing

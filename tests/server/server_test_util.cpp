#include "server_test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "model/model_weights.h"
#include "support/test_model_dir.h"
#include "text/tokenizer.h"

namespace longctx::testing {

const std::string& tiny_model_with_tokenizer() {
  static const std::string dir = [] {
    const std::string& model = tiny_model_dir();
    text::write_test_tokenizer(model, 1024);
    return model;
  }();
  return dir;
}

std::shared_ptr<const text::Tokenizer> test_tokenizer() {
  static const std::shared_ptr<const text::Tokenizer> tokenizer =
      text::Tokenizer::load(tiny_model_with_tokenizer());
  return tokenizer;
}

std::shared_ptr<Engine> make_test_engine(EngineOptions options) {
  static const auto model = std::make_shared<const LoadedModel>(tiny_model_with_tokenizer());
  if (options.kv_cache_memory_gib == 1.0) options.kv_cache_memory_gib = 0.25;
  if (options.max_model_len == 0) options.max_model_len = 4096;
  return Engine::create(model, test_tokenizer(), options);
}

TestServer::TestServer(std::shared_ptr<Engine> engine, server::ServerOptions options)
    : engine_(std::move(engine)) {
  options.host = "127.0.0.1";
  options.port = 0;
  if (options.served_model_names == std::vector<std::string>{"longctx"}) {
    options.served_model_names = {"tiny"};
  }
  options.vocab_size = 1024;
  server_ = std::make_unique<server::OpenAiServer>(engine_, test_tokenizer(), options);
  port_ = server_->start();
}

TestServer::~TestServer() {
  server_->shutdown(std::chrono::milliseconds(0));
}

std::unique_ptr<httplib::Client> TestServer::client() const {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port_);
  client->set_connection_timeout(std::chrono::seconds(5));
  client->set_read_timeout(std::chrono::seconds(60));
  client->set_write_timeout(std::chrono::seconds(10));
  return client;
}

JsonReply post_json(httplib::Client& client, const std::string& path, const std::string& body,
                    const httplib::Headers& headers) {
  JsonReply reply;
  const httplib::Result result = client.Post(path, headers, body, "application/json");
  if (!result) return reply;
  reply.status = result->status;
  reply.text = result->body;
  reply.retry_after = result->get_header_value("Retry-After");
  reply.body = OrderedJson::parse(result->body, nullptr, /*allow_exceptions=*/false);
  if (reply.body.is_discarded()) reply.body = nullptr;
  return reply;
}

std::vector<OrderedJson> sse_payloads(const std::string& body, bool* done) {
  std::vector<OrderedJson> payloads;
  *done = false;
  size_t at = 0;
  while (at < body.size()) {
    size_t end = body.find('\n', at);
    if (end == std::string::npos) end = body.size();
    const std::string line = body.substr(at, end - at);
    at = end + 1;
    if (line.rfind("data: ", 0) != 0) continue;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      *done = true;
      continue;
    }
    payloads.push_back(OrderedJson::parse(data));
  }
  return payloads;
}

bool is_openai_error(const OrderedJson& body) {
  if (!body.is_object() || !body.contains("error") || !body["error"].is_object()) return false;
  const OrderedJson& error = body["error"];
  return error.contains("message") && error["message"].is_string() && error.contains("type") &&
         error["type"].is_string() && error.contains("param") && error.contains("code");
}

RawConnection::RawConnection(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
  }
}

RawConnection::~RawConnection() {
  close();
}

bool RawConnection::send(const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::string RawConnection::read_until(const std::string& needle,
                                      std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (received_.find(needle) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd poll_fd{fd_, POLLIN, 0};
    if (::poll(&poll_fd, 1, static_cast<int>(left.count())) <= 0) break;
    char buffer[4096];
    const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    received_.append(buffer, static_cast<size_t>(n));
  }
  return received_;
}

void RawConnection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

}  // namespace longctx::testing

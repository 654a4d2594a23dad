// The server over HTTP on a free loopback port, with the real engine on the tiny test model
// (and a scripted engine where the model would have to write tool calls).
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "scripted_engine.h"
#include "server_test_util.h"

namespace longctx::testing {
namespace {

using namespace std::chrono_literals;

std::string chat_body(const std::string& content, OrderedJson extra = OrderedJson::object()) {
  OrderedJson body{{"model", "tiny"},
                   {"messages", {{{"role", "user"}, {"content", content}}}},
                   {"max_tokens", 8}};
  for (auto it = extra.begin(); it != extra.end(); ++it)
    body[it.key()] = it.value();
  return body.dump();
}

// A prompt of about `words` * 2 tokens.
std::string long_text(int words) {
  std::string text;
  for (int i = 0; i < words; ++i)
    text += "word" + std::to_string(i % 97) + " ";
  return text;
}

class ServerHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new TestServer(make_test_engine()); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static TestServer* server_;
};
TestServer* ServerHttpTest::server_ = nullptr;

TEST_F(ServerHttpTest, ModelsHealthVersionMetricsTokenize) {
  auto client = server_->client();
  auto models = client->Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  const OrderedJson list = OrderedJson::parse(models->body);
  EXPECT_EQ(list["object"], "list");
  EXPECT_EQ(list["data"][0]["id"], "tiny");
  EXPECT_EQ(list["data"][0]["max_model_len"], 4096);
  auto model = client->Get("/v1/models/tiny");
  ASSERT_TRUE(model);
  EXPECT_EQ(model->status, 200);
  auto missing = client->Get("/v1/models/other");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  auto health = client->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto version = client->Get("/version");
  ASSERT_TRUE(version);
  EXPECT_TRUE(OrderedJson::parse(version->body).contains("version"));
  auto metrics = client->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  EXPECT_NE(metrics->body.find("longctx:num_requests_running{model_name=\"tiny\"}"),
            std::string::npos);
  EXPECT_NE(metrics->body.find("longctx:time_to_first_token_seconds_bucket"), std::string::npos);

  const JsonReply tokens = post_json(*client, "/tokenize", R"({"prompt": "Hello world"})");
  ASSERT_EQ(tokens.status, 200) << tokens.text;
  EXPECT_EQ(tokens.body["count"], tokens.body["tokens"].size());
  const JsonReply text =
      post_json(*client, "/detokenize", OrderedJson{{"tokens", tokens.body["tokens"]}}.dump());
  ASSERT_EQ(text.status, 200) << text.text;
  EXPECT_EQ(text.body["prompt"], "<｜begin▁of▁sentence｜>Hello world");
  const JsonReply chat_tokens =
      post_json(*client, "/tokenize", chat_body("Hi", {{"thinking", true}}));
  ASSERT_EQ(chat_tokens.status, 200) << chat_tokens.text;
  EXPECT_GT(chat_tokens.body["count"].get<int>(), 2);
  EXPECT_EQ(post_json(*client, "/detokenize", R"({"tokens": [5000]})").status, 400);
}

TEST_F(ServerHttpTest, StreamingAndNonStreamingGiveTheSameSeededChat) {
  auto client = server_->client();
  const JsonReply whole =
      post_json(*client, "/v1/chat/completions",
                chat_body("Tell me about Paris", {{"seed", 11}, {"max_tokens", 12}}));
  ASSERT_EQ(whole.status, 200) << whole.text;
  EXPECT_EQ(whole.body["object"], "chat.completion");
  EXPECT_EQ(whole.body["model"], "tiny");
  const std::string content = whole.body["choices"][0]["message"]["content"];
  const OrderedJson usage = whole.body["usage"];
  EXPECT_GT(usage["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(usage["total_tokens"],
            usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());
  EXPECT_TRUE(usage["prompt_tokens_details"].contains("cached_tokens"));

  const JsonReply streamed =
      post_json(*client, "/v1/chat/completions",
                chat_body("Tell me about Paris", {{"seed", 11},
                                                  {"max_tokens", 12},
                                                  {"stream", true},
                                                  {"stream_options", {{"include_usage", true}}}}));
  ASSERT_EQ(streamed.status, 200);
  bool done = false;
  const std::vector<OrderedJson> chunks = sse_payloads(streamed.text, &done);
  EXPECT_TRUE(done) << "the stream ends with data: [DONE]";
  ASSERT_GE(chunks.size(), 2u);
  std::string joined;
  std::string finish;
  for (size_t i = 0; i + 1 < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i]["object"], "chat.completion.chunk");
    EXPECT_EQ(chunks[i]["id"], chunks[0]["id"]);
    const OrderedJson& choice = chunks[i]["choices"][0];
    if (choice["delta"].contains("content"))
      joined += choice["delta"]["content"].get<std::string>();
    if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
  }
  EXPECT_EQ(joined, content);
  EXPECT_EQ(finish, whole.body["choices"][0]["finish_reason"]);
  EXPECT_TRUE(chunks.back()["choices"].empty());
  EXPECT_EQ(chunks.back()["usage"]["completion_tokens"], usage["completion_tokens"]);
}

TEST_F(ServerHttpTest, CompletionsWithNAndLogprobs) {
  auto client = server_->client();
  const JsonReply reply = post_json(
      *client, "/v1/completions",
      R"({"model": "tiny", "prompt": "Hello world", "max_tokens": 5, "n": 2, "seed": 3, "logprobs": 2, "ignore_eos": true})");
  ASSERT_EQ(reply.status, 200) << reply.text;
  EXPECT_EQ(reply.body["object"], "text_completion");
  ASSERT_EQ(reply.body["choices"].size(), 2u);
  for (const OrderedJson& choice : reply.body["choices"]) {
    EXPECT_EQ(choice["logprobs"]["tokens"].size(), 5u);
    EXPECT_EQ(choice["logprobs"]["token_logprobs"].size(), 5u);
    EXPECT_EQ(choice["finish_reason"], "length");
  }
  EXPECT_EQ(reply.body["usage"]["completion_tokens"], 10);
  EXPECT_NE(reply.body["choices"][0]["text"], reply.body["choices"][1]["text"])
      << "n sequences differ";
}

TEST_F(ServerHttpTest, RepeatedLongPromptReportsCachedTokens) {
  auto client = server_->client();
  const std::string body = chat_body(long_text(400), {{"max_tokens", 2}});
  const JsonReply first = post_json(*client, "/v1/chat/completions", body);
  ASSERT_EQ(first.status, 200) << first.text;
  ASSERT_GT(first.body["usage"]["prompt_tokens"].get<int>(), 512);
  const JsonReply second = post_json(*client, "/v1/chat/completions", body);
  ASSERT_EQ(second.status, 200) << second.text;
  EXPECT_GE(second.body["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), 256);
  EXPECT_EQ(second.body["usage"]["prompt_tokens"], first.body["usage"]["prompt_tokens"]);
}

TEST_F(ServerHttpTest, UnknownModelAndPathAre404InOpenAiShape) {
  auto client = server_->client();
  const JsonReply model =
      post_json(*client, "/v1/chat/completions", chat_body("Hi", {{"model", "gpt-5"}}));
  EXPECT_EQ(model.status, 404);
  EXPECT_TRUE(is_openai_error(model.body)) << model.text;
  EXPECT_EQ(model.body["error"]["param"], "model");
  EXPECT_EQ(model.body["error"]["code"], "model_not_found");
  auto path = client->Get("/v1/nothing");
  ASSERT_TRUE(path);
  EXPECT_EQ(path->status, 404);
  EXPECT_TRUE(is_openai_error(OrderedJson::parse(path->body)));
}

TEST(ServerAuthTest, ApiKeyGuardsV1Only) {
  server::ServerOptions options;
  options.api_key = "sekrit";
  TestServer server(make_test_engine(), options);
  auto client = server.client();
  const JsonReply missing = post_json(*client, "/v1/chat/completions", chat_body("Hi"));
  EXPECT_EQ(missing.status, 401);
  EXPECT_TRUE(is_openai_error(missing.body));
  EXPECT_EQ(missing.body["error"]["code"], "invalid_api_key");
  const JsonReply wrong = post_json(*client, "/v1/chat/completions", chat_body("Hi"),
                                    {{"Authorization", "Bearer sekriT"}});
  EXPECT_EQ(wrong.status, 401);
  auto models = client->Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 401);
  const JsonReply right = post_json(*client, "/v1/chat/completions", chat_body("Hi"),
                                    {{"Authorization", "Bearer sekrit"}});
  EXPECT_EQ(right.status, 200) << right.text;
  auto health = client->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST(ServerQueueTest, FullWaitingQueueGives429WithRetryAfter) {
  EngineOptions options;
  options.max_num_seqs = 1;
  options.max_waiting_requests = 0;
  std::shared_ptr<Engine> engine = make_test_engine(options);
  // The one batch slot is taken and nothing may wait: every HTTP request is refused.
  GenerationRequest occupant;
  occupant.prompt = {1, 2, 3};
  occupant.sampling.max_tokens = 1000;
  occupant.sampling.ignore_eos = true;
  const std::shared_ptr<RequestHandle> running = engine->submit(occupant);
  TestServer server(engine);
  auto client = server.client();
  for (const bool stream : {false, true}) {
    const JsonReply reply =
        post_json(*client, "/v1/chat/completions", chat_body("Hi", {{"stream", stream}}));
    EXPECT_EQ(reply.status, 429);
    EXPECT_TRUE(is_openai_error(reply.body)) << reply.text;
    EXPECT_EQ(reply.body["error"]["code"], "queue_full");
    EXPECT_EQ(reply.retry_after, "1");
  }
  auto metrics = client->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find(
                "longctx:request_refused_total{model_name=\"tiny\",reason=\"queue_full\"} 2"),
            std::string::npos);  running->abort();
}

std::string raw_post(const std::string& path, const std::string& body) {
  return "POST " + path +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
    ++count;
  return count;
}

TEST(ServerDisconnectTest, ClientHangingUpMidStreamAbortsAndFreesKv) {
  TestServer server(make_test_engine());
  RawConnection connection(server.port());
  ASSERT_TRUE(connection.send(
      raw_post("/v1/completions",
               R"({"prompt": "Hello", "max_tokens": 3000, "ignore_eos": true, "stream": true})")));
  std::string received;
  ASSERT_TRUE(eventually(
      [&] {
        received = connection.read_until("data: [DONE]", 100ms);
        return count_of(received, "data: ") >= 5;
      },
      10s))
      << received;
  EXPECT_GT(server.engine().kv_pages_in_use(), 0) << "the request holds KV while it runs";
  const auto hung_up = std::chrono::steady_clock::now();
  connection.close();
  ASSERT_TRUE(eventually([&] { return server.engine().kv_pages_in_use() == 0; }, 2s))
      << "the aborted request's KV must be freed";
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - hung_up).count();
  EXPECT_LT(seconds, 1.0);
  EXPECT_TRUE(eventually([&] { return server.server().client_disconnects() == 1; }, 2s));
  EXPECT_TRUE(eventually(
      [&] { return server.engine().metrics().requests_finished_total["abort"] == 1; }, 2s));
  EXPECT_EQ(server.engine().metrics().generation_tokens_total < 3000, true);
  std::printf("KV freed %.0f ms after the client hung up\n", seconds * 1000.0);
}

TEST(ServerDisconnectTest, ClientHangingUpWhileQueuedIsNoticedByTheHeartbeat) {
  EngineOptions options;
  options.max_num_seqs = 1;  // the first request takes the only slot; the second waits
  TestServer server(make_test_engine(options));
  const std::string long_stream =
      R"({"prompt": "Hello", "max_tokens": 3000, "ignore_eos": true, "stream": true})";
  RawConnection running(server.port());
  ASSERT_TRUE(running.send(raw_post("/v1/completions", long_stream)));
  ASSERT_NE(running.read_until("\"text\"", 10s).find("\"text\""), std::string::npos);
  RawConnection queued(server.port());
  ASSERT_TRUE(queued.send(raw_post("/v1/completions", long_stream)));
  ASSERT_TRUE(eventually([&] { return server.engine().metrics().requests_waiting == 1; }, 5s));
  queued.close();
  // Nothing is written to a waiting stream but heartbeats: the second one after the hang-up fails.
  EXPECT_TRUE(eventually([&] { return server.engine().metrics().requests_waiting == 0; }, 2s));
  EXPECT_EQ(server.server().client_disconnects(), 1);
  running.close();
  EXPECT_TRUE(eventually([&] { return server.engine().kv_pages_in_use() == 0; }, 2s));
}

TEST(ServerShutdownTest, ShutdownAbortsInFlightStreamsAndStopsListening) {
  auto server = std::make_unique<TestServer>(make_test_engine());
  const int port = server->port();
  RawConnection connection(port);
  ASSERT_TRUE(connection.send(raw_post(
      "/v1/chat/completions",
      R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3000, "ignore_eos": true, "stream": true})")));
  ASSERT_NE(connection.read_until("\"content\"", 10s).find("\"content\""), std::string::npos);
  std::thread stopper([&] { server->server().shutdown(0ms); });
  const std::string received = connection.read_until("data: [DONE]", 10s);
  stopper.join();
  EXPECT_NE(received.find("\"finish_reason\":\"abort\""), std::string::npos)
      << received.substr(received.size() - 300);
  EXPECT_NE(received.find("data: [DONE]"), std::string::npos);
  EXPECT_EQ(server->engine().kv_pages_in_use(), 0);
  EXPECT_THROW(RawConnection{port}, std::runtime_error) << "the listening socket is closed";
  server.reset();
}

TEST(ServerToolCallTest, ToolCallsRoundTripStreamingAndNot) {
  auto engine = std::make_shared<ScriptedEngine>(test_tokenizer(), weather_script);
  TestServer server(engine);
  auto client = server.client();
  const OrderedJson tools =
      OrderedJson::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "days": {"type": "integer"}}}}}])");
  OrderedJson request{{"model", "tiny"},
                      {"messages", {{{"role", "user"}, {"content", "Weather in Paris?"}}}},
                      {"tools", tools},
                      {"thinking", true}};
  const JsonReply whole = post_json(*client, "/v1/chat/completions", request.dump());
  ASSERT_EQ(whole.status, 200) << whole.text;
  const OrderedJson& choice = whole.body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["reasoning_content"], "The user wants the weather.");
  EXPECT_EQ(choice["message"]["content"], "Let me look that up.");
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
  const OrderedJson call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u);
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(OrderedJson::parse(call["function"]["arguments"].get<std::string>()),
            OrderedJson::parse(R"({"location": "Paris", "days": 3})"));

  request["stream"] = true;
  const JsonReply streamed = post_json(*client, "/v1/chat/completions", request.dump());
  bool done = false;
  std::string finish;
  OrderedJson streamed_call;
  for (const OrderedJson& chunk : sse_payloads(streamed.text, &done)) {
    const OrderedJson& delta = chunk["choices"][0]["delta"];
    if (delta.contains("tool_calls")) streamed_call = delta["tool_calls"][0];
    if (!chunk["choices"][0]["finish_reason"].is_null())
      finish = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(streamed_call["index"], 0);
  EXPECT_EQ(streamed_call["function"], call["function"]);

  // The client runs the tool and sends the result back.
  request["stream"] = false;
  request["messages"].push_back(choice["message"]);
  request["messages"].push_back(
      {{"role", "tool"}, {"tool_call_id", call["id"]}, {"content", "sunny, 22 C"}});
  const JsonReply answer = post_json(*client, "/v1/chat/completions", request.dump());
  ASSERT_EQ(answer.status, 200) << answer.text;
  EXPECT_EQ(answer.body["choices"][0]["message"]["content"], "It is sunny in Paris, 22 degrees.");
  EXPECT_EQ(answer.body["choices"][0]["finish_reason"], "stop");
}

// Bad input of every kind: the status is right, the body is an OpenAI error, nothing is a 500,
// and the server keeps serving.
class ServerBadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server::ServerOptions options;
    options.max_body_bytes = 1 << 20;
    server_ = new TestServer(make_test_engine(), options);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void TearDown() override {
    auto client = server_->client();
    const JsonReply reply =
        post_json(*client, "/v1/chat/completions", chat_body("Still there?", {{"max_tokens", 2}}));
    EXPECT_EQ(reply.status, 200) << "the server keeps serving: " << reply.text;
  }
  static void expect_error(const JsonReply& reply, int status, const std::string& context) {
    EXPECT_EQ(reply.status, status) << context << "\n" << reply.text;
    EXPECT_TRUE(is_openai_error(reply.body)) << context << "\n" << reply.text;
  }
  static TestServer* server_;
};
TestServer* ServerBadInputTest::server_ = nullptr;

TEST_F(ServerBadInputTest, RandomBytes) {
  auto client = server_->client();
  std::mt19937 random(17);
  for (int i = 0; i < 200; ++i) {
    std::string body(random() % 300, '\0');
    for (char& c : body)
      c = static_cast<char>(random());
    for (const char* path : {"/v1/chat/completions", "/v1/completions", "/tokenize"}) {
      expect_error(post_json(*client, path, body), 400, "random body " + std::to_string(i));
    }
  }
}

TEST_F(ServerBadInputTest, MutatedRequestsNeverFailTheServer) {
  auto client = server_->client();
  const std::string valid =
      chat_body("Hello", {{"max_tokens", 3}, {"temperature", 0.7}, {"stop", {"x"}}});
  std::mt19937 random(23);
  int ok = 0;
  for (int i = 0; i < 300; ++i) {
    std::string body = valid;
    for (int edits = 1 + static_cast<int>(random() % 3); edits > 0; --edits) {
      const size_t at = random() % body.size();
      switch (random() % 3) {
        case 0:
          body[at] = static_cast<char>(random());
          break;
        case 1:
          body.erase(at, 1);
          break;
        default:
          body.insert(at, 1, "{}[]\":,0-9e\\"[random() % 13]);
          break;
      }
    }
    const JsonReply reply = post_json(*client, "/v1/chat/completions", body);
    ASSERT_NE(reply.status, 0) << "no reply to " << body;
    EXPECT_LT(reply.status, 500) << body << "\n" << reply.text;
    if (reply.status == 200) {
      ++ok;
    } else {
      EXPECT_TRUE(is_openai_error(reply.body)) << body << "\n" << reply.text;
    }
  }
  EXPECT_LT(ok, 300);
}

TEST_F(ServerBadInputTest, TruncatedBodies) {
  auto client = server_->client();
  const std::string valid = chat_body("Hello there", {{"max_tokens", 2}});
  for (size_t length = 0; length < valid.size(); ++length) {
    expect_error(post_json(*client, "/v1/chat/completions", valid.substr(0, length)), 400,
                 "prefix of length " + std::to_string(length));
  }
  // A body shorter than its Content-Length, then a hang-up.
  RawConnection connection(server_->port());
  connection.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" +
                  valid.substr(0, 40));
  connection.close();
}

TEST_F(ServerBadInputTest, HugeBodiesGet413) {
  auto client = server_->client();
  const std::string huge = chat_body(std::string(2 << 20, 'a'));
  expect_error(post_json(*client, "/v1/chat/completions", huge), 413,
               "2 MiB body with Content-Length");
  // Chunked bodies have no Content-Length for httplib to check; the server counts them.
  RawConnection connection(server_->port());
  connection.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  const std::string chunk(64 * 1024, 'a');
  for (int i = 0; i < 40 && connection.send("10000\r\n" + chunk + "\r\n"); ++i) {
  }
  const std::string reply = connection.read_until("}}", 10s);
  EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply.substr(0, 200);
  EXPECT_NE(reply.find("request_too_large"), std::string::npos);
  // Under the limit but far beyond the context: a 400 that names the prompt.
  const JsonReply long_prompt =
      post_json(*client, "/v1/completions", OrderedJson{{"prompt", long_text(20000)}}.dump());
  expect_error(long_prompt, 400, "prompt longer than the context");
  EXPECT_EQ(long_prompt.body["error"]["param"], "prompt");
}

TEST_F(ServerBadInputTest, InvalidUtf8InMessages) {
  auto client = server_->client();
  for (const std::string& content : {std::string("\xff\xfe"), std::string("caf\xc3"),
                                     std::string("\xc0\xaf"), std::string("\xed\xa0\x80")}) {
    const std::string body =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"" + content + "\"}]}";
    const JsonReply reply = post_json(*client, "/v1/chat/completions", body);
    expect_error(reply, 400, "invalid UTF-8");
    EXPECT_EQ(reply.body["error"]["code"], "invalid_json");
  }
  expect_error(post_json(*client, "/v1/chat/completions",
                         R"({"messages": [{"role": "user", "content": "\ud800"}]})"),
               400, "lone surrogate");
}

TEST_F(ServerBadInputTest, BadFieldsAre400sThatNameTheField) {
  auto client = server_->client();
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"/v1/chat/completions", chat_body("Hi", {{"max_tokens", -1}}), "max_tokens"},
      {"/v1/completions", R"({"prompt": "Hi", "max_tokens": -1})", "max_tokens"},
      {"/v1/chat/completions", chat_body("Hi", {{"n", -3}}), "n"},
      {"/v1/chat/completions", chat_body("Hi", {{"temperature", "warm"}}), "temperature"},
      {"/v1/chat/completions", chat_body("Hi", {{"messages", nullptr}}), "messages"},
      {"/v1/chat/completions", chat_body("Hi", {{"response_format", {{"type", "xml"}}}}),
       "response_format.type"},
      {"/v1/completions", R"({"prompt": [1, 2, 99999]})", "prompt"},
      {"/v1/completions", R"({"prompt": {"text": "Hi"}})", "prompt"},
  };
  for (const auto& [path, body, param] : cases) {
    const JsonReply reply = post_json(*client, path, body);
    expect_error(reply, 400, body);
    EXPECT_EQ(reply.body["error"]["param"], param) << body;
  }
  expect_error(
      post_json(*client, "/v1/chat/completions", std::string(200, '[') + std::string(200, ']')),
      400, "deep nesting");
}

}  // namespace
}  // namespace longctx::testing

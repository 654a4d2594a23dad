// Response building: engine events -> chat.completion(.chunk) / text_completion objects.
#include <gtest/gtest.h>

#include <random>

#include "server/response_builder.h"
#include "server_test_util.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace longctx::server {
namespace {

using testing::OrderedJson;

const std::string kDsml(text::tokens::kDsml);
const std::string kToolCallText =
    "\n\n<" + kDsml + "tool_calls>\n<" + kDsml + "invoke name=\"get_weather\">\n<" + kDsml +
    "parameter name=\"location\" string=\"true\">Paris</" + kDsml + "parameter>\n<" + kDsml +
    "parameter name=\"days\" string=\"false\">3</" + kDsml + "parameter>\n</" + kDsml +
    "invoke>\n</" + kDsml + "tool_calls>";

ResponseMeta meta() {
  ResponseMeta result;
  result.id = "chatcmpl-test";
  result.model = "tiny";
  result.created = 1700000000;
  result.tokenizer = testing::test_tokenizer().get();
  return result;
}

// Events that deliver `text` to sequence `index` in pieces cut at `cuts`, finishing with `finish`.
std::vector<RequestEvent> events_for(const std::string& text, std::vector<size_t> cuts,
                                     FinishReason finish, int64_t index = 0) {
  std::vector<RequestEvent> events;
  size_t at = 0;
  cuts.push_back(text.size());
  for (const size_t cut : cuts) {
    RequestEvent event;
    SequenceDelta delta;
    delta.index = index;
    delta.text = text.substr(at, cut - at);
    delta.tokens = {7};
    at = cut;
    if (cut == text.size()) delta.finish = finish;
    event.deltas.push_back(std::move(delta));
    events.push_back(std::move(event));
  }
  return events;
}

RequestEvent final_event(int64_t prompt, int64_t completion, int64_t cached) {
  RequestEvent event;
  event.final = true;
  event.usage = {prompt, completion, cached};
  return event;
}

InferenceRequest chat_request(bool stream, bool thinking) {
  InferenceRequest request;
  request.kind = ApiKind::kChatCompletion;
  request.stream = stream;
  request.include_usage = stream;
  request.thinking = thinking;
  return request;
}

TEST(ServerResponseTest, ChatStreamAndWholeResponseAgreeForAnySplit) {
  const std::string text = "The user wants weather.</think>Let me look." + kToolCallText;
  std::mt19937 random(5);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<size_t> cuts;
    for (size_t i = 1; i < text.size(); ++i) {
      if (random() % 7 == 0) cuts.push_back(i);
    }
    auto builder = make_response_builder(chat_request(true, true), meta());
    std::string reasoning, content;
    OrderedJson streamed_calls = OrderedJson::array();
    std::string finish_reason;
    const std::vector<OrderedJson> start = builder->start_chunks();
    ASSERT_EQ(start.size(), 1u);
    EXPECT_EQ(start[0]["choices"][0]["delta"]["role"], "assistant");
    std::vector<RequestEvent> events = events_for(text, cuts, FinishReason::kStop);
    events.push_back(final_event(10, static_cast<int64_t>(cuts.size() + 1), 0));
    for (const RequestEvent& event : events) {
      for (const OrderedJson& chunk : builder->add(event)) {
        EXPECT_EQ(chunk["object"], "chat.completion.chunk");
        EXPECT_EQ(chunk["id"], "chatcmpl-test");
        EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null())
            << "include_usage: usage null until the end";
        const OrderedJson& choice = chunk["choices"][0];
        const OrderedJson& delta = choice["delta"];
        if (delta.contains("reasoning_content"))
          reasoning += delta["reasoning_content"].get<std::string>();
        if (delta.contains("content")) content += delta["content"].get<std::string>();
        if (delta.contains("tool_calls")) {
          for (const OrderedJson& call : delta["tool_calls"])
            streamed_calls.push_back(call);
        }
        if (!choice["finish_reason"].is_null()) finish_reason = choice["finish_reason"];
      }
    }
    ASSERT_TRUE(builder->finished());
    EXPECT_EQ(reasoning, "The user wants weather.");
    EXPECT_EQ(content, "Let me look.");
    EXPECT_EQ(finish_reason, "tool_calls");
    ASSERT_EQ(streamed_calls.size(), 1u);
    EXPECT_EQ(streamed_calls[0]["index"], 0);
    EXPECT_EQ(streamed_calls[0]["type"], "function");
    EXPECT_EQ(streamed_calls[0]["function"]["name"], "get_weather");
    EXPECT_EQ(OrderedJson::parse(streamed_calls[0]["function"]["arguments"].get<std::string>()),
              OrderedJson::parse(R"({"location": "Paris", "days": 3})"));

    const OrderedJson whole = builder->response();
    EXPECT_EQ(whole["object"], "chat.completion");
    const OrderedJson& message = whole["choices"][0]["message"];
    EXPECT_EQ(message["reasoning_content"], reasoning);
    EXPECT_EQ(message["content"], content);
    ASSERT_EQ(message["tool_calls"].size(), 1u);
    EXPECT_EQ(message["tool_calls"][0]["id"], streamed_calls[0]["id"]);
    EXPECT_EQ(message["tool_calls"][0]["function"], streamed_calls[0]["function"]);
    EXPECT_EQ(whole["choices"][0]["finish_reason"], "tool_calls");
    EXPECT_EQ(whole["usage"]["total_tokens"], 10 + static_cast<int64_t>(cuts.size() + 1));

    const OrderedJson usage = builder->usage_chunk();
    EXPECT_EQ(usage["object"], "chat.completion.chunk");
    EXPECT_TRUE(usage["choices"].empty());
    EXPECT_EQ(usage["usage"]["prompt_tokens"], 10);
    EXPECT_EQ(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  }
}

TEST(ServerResponseTest, ChatModeReplyHasNoReasoningAndLengthFinish) {
  auto builder = make_response_builder(chat_request(false, false), meta());
  for (const RequestEvent& event : events_for("Hello there", {3, 5}, FinishReason::kLength))
    builder->add(event);
  builder->add(final_event(4, 3, 2));
  const OrderedJson whole = builder->response();
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "Hello there");
  EXPECT_FALSE(whole["choices"][0]["message"].contains("reasoning_content"));
  EXPECT_FALSE(whole["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(whole["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(whole["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  EXPECT_FALSE(whole.contains("usage") && whole["usage"].is_null());
}

TEST(ServerResponseTest, SequencesOfNAreKeptApart) {
  InferenceRequest request = chat_request(false, false);
  request.generation.sampling.n = 2;
  auto builder = make_response_builder(request, meta());
  const auto first = events_for("one two", {3}, FinishReason::kStop, 0);
  const auto second = events_for("three four", {5}, FinishReason::kStop, 1);
  for (size_t i = 0; i < 2; ++i) {
    builder->add(first[i]);
    builder->add(second[i]);
  }
  builder->add(final_event(4, 4, 0));
  const OrderedJson whole = builder->response();
  ASSERT_EQ(whole["choices"].size(), 2u);
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "one two");
  EXPECT_EQ(whole["choices"][1]["message"]["content"], "three four");
  EXPECT_EQ(whole["choices"][1]["index"], 1);
}

TEST(ServerResponseTest, ChatLogprobsHaveOpenAiShape) {
  InferenceRequest request = chat_request(true, false);
  request.logprobs = true;
  auto builder = make_response_builder(request, meta());
  const text::Tokenizer& tokenizer = *testing::test_tokenizer();
  const std::vector<int32_t> tokens = tokenizer.encode("Hello world");
  RequestEvent event;
  SequenceDelta delta;
  delta.tokens = tokens;
  delta.text = "Hello world";
  for (const int32_t token : tokens)
    delta.logprobs.push_back({token, -0.25f, {{token, -0.25f}, {3, -2.0f}}});
  delta.finish = FinishReason::kStop;
  event.deltas.push_back(delta);
  const std::vector<OrderedJson> chunks = builder->add(event);
  builder->add(final_event(3, static_cast<int64_t>(tokens.size()), 0));
  ASSERT_EQ(chunks.size(), 1u);
  const OrderedJson& entries = chunks[0]["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(entries.size(), tokens.size());
  std::string joined;
  for (const OrderedJson& entry : entries) {
    joined += entry["token"].get<std::string>();
    EXPECT_EQ(entry["logprob"], -0.25);
    EXPECT_TRUE(entry["bytes"].is_array());
    ASSERT_EQ(entry["top_logprobs"].size(), 2u);
    EXPECT_EQ(entry["top_logprobs"][1]["logprob"], -2.0);
    EXPECT_TRUE(entry["top_logprobs"][1].contains("bytes"));
  }
  EXPECT_EQ(joined, "Hello world");
  EXPECT_EQ(builder->response()["choices"][0]["logprobs"]["content"], entries);
}

TEST(ServerResponseTest, CompletionEchoAndLogprobOffsets) {
  InferenceRequest request;
  request.kind = ApiKind::kCompletion;
  request.echo_text = "Say: ";
  request.logprobs = true;
  auto builder = make_response_builder(request, meta());
  const text::Tokenizer& tokenizer = *testing::test_tokenizer();
  const std::vector<int32_t> tokens = tokenizer.encode("Hello world");
  RequestEvent event;
  SequenceDelta delta;
  delta.tokens = tokens;
  delta.text = "Hello world";
  for (const int32_t token : tokens)
    delta.logprobs.push_back({token, -1.0f, {{3, -0.5f}}});
  delta.finish = FinishReason::kLength;
  event.deltas.push_back(delta);
  builder->add(event);
  builder->add(final_event(3, static_cast<int64_t>(tokens.size()), 0));
  const OrderedJson whole = builder->response();
  EXPECT_EQ(whole["object"], "text_completion");
  const OrderedJson& choice = whole["choices"][0];
  EXPECT_EQ(choice["text"], "Say: Hello world");
  EXPECT_EQ(choice["finish_reason"], "length");
  const OrderedJson& logprobs = choice["logprobs"];
  ASSERT_EQ(logprobs["tokens"].size(), tokens.size());
  EXPECT_EQ(logprobs["text_offset"][0], 5) << "offsets count the echoed prompt";
  EXPECT_EQ(logprobs["top_logprobs"][0].size(), 2u) << "the sampled token joins the top ones";
}

}  // namespace
}  // namespace longctx::server

// Request parsing: OpenAI bodies -> engine requests, and 400s that name the field at fault.
#include <gtest/gtest.h>

#include "server/json_fields.h"
#include "server/openai_request.h"
#include "server_test_util.h"
#include "text/tokenizer.h"

namespace longctx::server {
namespace {

using testing::OrderedJson;

ModelLimits limits() {
  ModelLimits result;
  result.tokenizer = testing::test_tokenizer().get();
  result.max_model_len = 4096;
  result.vocab_size = 1024;
  return result;
}

std::string prompt_text(const InferenceRequest& request) {
  return testing::test_tokenizer()->decode(request.generation.prompt);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

OrderedJson chat(OrderedJson extra = OrderedJson::object()) {
  OrderedJson body{{"model", "tiny"},
                   {"messages", {{{"role", "user"}, {"content", "What is the weather?"}}}}};
  for (auto it = extra.begin(); it != extra.end(); ++it)
    body[it.key()] = it.value();
  return body;
}

// The param of the 400 that parsing `body` throws ("<none>" when it does not throw).
std::string rejected_param(const OrderedJson& body, bool chat_request = true) {
  try {
    if (chat_request) {
      parse_chat_request(body, limits());
    } else {
      parse_completion_request(body, limits());
    }
  } catch (const ApiError& error) {
    EXPECT_EQ(error.status(), 400) << error.what();
    return error.param();
  }
  return "<none>";
}

TEST(ServerRequestTest, ThinkingSwitchesEndThePromptInsideThink) {
  for (const OrderedJson& extra :
       {OrderedJson{{"thinking", true}}, OrderedJson{{"thinking", {{"type", "enabled"}}}},
        OrderedJson{{"chat_template_kwargs", {{"thinking", true}}}},
        OrderedJson{{"chat_template_kwargs", {{"enable_thinking", true}}}}}) {
    const InferenceRequest request = parse_chat_request(chat(extra), limits());
    EXPECT_TRUE(request.thinking) << extra.dump();
    EXPECT_TRUE(ends_with(prompt_text(request), "<｜Assistant｜><think>")) << prompt_text(request);
  }
  for (const OrderedJson& extra : {OrderedJson::object(), OrderedJson{{"thinking", false}},
                                   OrderedJson{{"thinking", {{"type", "disabled"}}}}}) {
    const InferenceRequest request = parse_chat_request(chat(extra), limits());
    EXPECT_FALSE(request.thinking) << extra.dump();
    EXPECT_TRUE(ends_with(prompt_text(request), "<｜Assistant｜></think>")) << prompt_text(request);
  }
}

TEST(ServerRequestTest, ReasoningEffortMaxAddsItsParagraph) {
  const std::string plain = prompt_text(parse_chat_request(chat({{"thinking", true}}), limits()));
  const std::string max = prompt_text(
      parse_chat_request(chat({{"thinking", true}, {"reasoning_effort", "max"}}), limits()));
  EXPECT_GT(max.size(), plain.size());
  EXPECT_EQ(rejected_param(chat({{"reasoning_effort", "extreme"}})), "reasoning_effort");
}

TEST(ServerRequestTest, ToolsReachThePromptUnlessToolChoiceIsNone) {
  const OrderedJson tools =
      OrderedJson::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}])");
  const std::string offered = prompt_text(parse_chat_request(chat({{"tools", tools}}), limits()));
  EXPECT_NE(offered.find("get_weather"), std::string::npos);
  EXPECT_NE(offered.find("{\"type\": \"object\", \"properties\""), std::string::npos)
      << "key order is kept";
  const std::string withheld =
      prompt_text(parse_chat_request(chat({{"tools", tools}, {"tool_choice", "none"}}), limits()));
  EXPECT_EQ(withheld.find("get_weather"), std::string::npos);
  EXPECT_EQ(rejected_param(
                chat({{"tools", tools},
                      {"tool_choice", {{"type", "function"}, {"function", {{"name", "other"}}}}}})),
            "tool_choice");
  EXPECT_EQ(rejected_param(chat({{"tool_choice", "required"}})), "tool_choice");
  EXPECT_EQ(rejected_param(chat({{"tools", OrderedJson::array({{{"type", "function"}}})}})),
            "tools");
}

TEST(ServerRequestTest, ResponseFormatIsRenderedIntoThePrompt) {
  const std::string json_mode = prompt_text(
      parse_chat_request(chat({{"response_format", {{"type", "json_object"}}}}), limits()));
  EXPECT_NE(json_mode.find("json_object"), std::string::npos) << json_mode;
  const std::string text_mode =
      prompt_text(parse_chat_request(chat({{"response_format", {{"type", "text"}}}}), limits()));
  EXPECT_EQ(text_mode.find("json_object"), std::string::npos);
  EXPECT_EQ(rejected_param(chat({{"response_format", {{"type", "yaml"}}}})),
            "response_format.type");
  EXPECT_EQ(rejected_param(chat({{"response_format", {{"type", "json_schema"}}}})),
            "response_format.json_schema");
}

TEST(ServerRequestTest, ChatSamplingFieldsAndDefaults) {
  const InferenceRequest request =
      parse_chat_request(chat({{"temperature", 0.5},
                               {"top_p", 0.9},
                               {"seed", 42},
                               {"n", 2},
                               {"stop", "END"},
                               {"logprobs", true},
                               {"top_logprobs", 3},
                               {"stream", true},
                               {"stream_options", {{"include_usage", true}}}}),
                         limits());
  const SamplingParams& sampling = request.generation.sampling;
  EXPECT_EQ(sampling.temperature, 0.5);
  EXPECT_EQ(sampling.top_p, 0.9);
  EXPECT_EQ(sampling.seed, 42u);
  EXPECT_EQ(sampling.n, 2);
  EXPECT_EQ(sampling.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(sampling.logprobs, 3);
  EXPECT_TRUE(request.stream);
  EXPECT_TRUE(request.include_usage);
  // Without max_tokens a chat completion may fill the context.
  EXPECT_EQ(sampling.max_tokens, 4096 - static_cast<int64_t>(request.generation.prompt.size()));
  EXPECT_EQ(parse_chat_request(chat({{"max_completion_tokens", 7}, {"max_tokens", 9}}), limits())
                .generation.sampling.max_tokens,
            7);
}

TEST(ServerRequestTest, CompletionPromptForms) {
  const text::Tokenizer& tokenizer = *testing::test_tokenizer();
  const std::vector<int32_t> hello = tokenizer.encode("Hello world");
  InferenceRequest request = parse_completion_request({{"prompt", "Hello world"}}, limits());
  ASSERT_FALSE(request.generation.prompt.empty());
  EXPECT_EQ(request.generation.prompt[0], tokenizer.bos_id()) << "string prompts start with BOS";
  EXPECT_EQ(
      std::vector<int32_t>(request.generation.prompt.begin() + 1, request.generation.prompt.end()),
      hello);
  EXPECT_EQ(request.generation.sampling.max_tokens, 16);
  request = parse_completion_request({{"prompt", {"Hello world"}}, {"add_special_tokens", false}},
                                     limits());
  EXPECT_EQ(request.generation.prompt, hello);
  request = parse_completion_request({{"prompt", {5, 6, 7}}}, limits());
  EXPECT_EQ(request.generation.prompt, (std::vector<int32_t>{5, 6, 7}));
  request = parse_completion_request({{"prompt", {{5, 6, 7}}}, {"echo", true}}, limits());
  EXPECT_EQ(request.generation.prompt, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(request.echo_text, tokenizer.decode(std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(rejected_param({{"prompt", {"a", "b"}}}, false), "prompt");
  EXPECT_EQ(rejected_param({{"prompt", {5, 2000}}}, false), "prompt");
  EXPECT_EQ(rejected_param({{"prompt", ""}}, false), "prompt");
  EXPECT_EQ(rejected_param(OrderedJson::object(), false), "prompt");
  EXPECT_EQ(rejected_param({{"prompt", "x"}, {"suffix", "y"}}, false), "suffix");
  EXPECT_EQ(rejected_param({{"prompt", "x"}, {"best_of", 3}}, false), "best_of");
  EXPECT_EQ(rejected_param({{"prompt", "x"}, {"logprobs", 21}}, false), "logprobs");
}

TEST(ServerRequestTest, BadFieldsAreNamed) {
  const std::vector<std::pair<OrderedJson, std::string>> cases = {
      {chat({{"max_tokens", -5}}), "max_tokens"},
      {chat({{"max_tokens", 0}}), "max_tokens"},
      {chat({{"max_tokens", 2.5}}), "max_tokens"},
      {chat({{"max_tokens", "ten"}}), "max_tokens"},
      {chat({{"max_tokens", 5000}}), "max_tokens"},
      {chat({{"temperature", -1}}), "temperature"},
      {chat({{"temperature", "hot"}}), "temperature"},
      {chat({{"top_p", 0}}), "top_p"},
      {chat({{"top_k", -7}}), "top_k"},
      {chat({{"presence_penalty", 3}}), "presence_penalty"},
      {chat({{"n", 0}}), "n"},
      {chat({{"n", 100}}), "n"},
      {chat({{"seed", "abc"}}), "seed"},
      {chat({{"stop", 5}}), "stop"},
      {chat({{"stop", {"a", 5}}}), "stop"},
      {chat({{"stop", ""}}), "stop"},
      {chat({{"logprobs", "yes"}}), "logprobs"},
      {chat({{"top_logprobs", 3}}), "top_logprobs"},
      {chat({{"logprobs", true}, {"top_logprobs", 30}}), "top_logprobs"},
      {chat({{"stream", "yes"}}), "stream"},
      {chat({{"stream_options", {{"include_usage", true}}}}), "stream_options"},
      {chat({{"stream", true}, {"stream_options", {{"include_usage", 1}}}}),
       "stream_options.include_usage"},
      {chat({{"logit_bias", {{"5", 10}}}}), "logit_bias"},
      {chat({{"stop_token_ids", {-1}}}), "stop_token_ids"},
      {chat({{"messages", OrderedJson::array()}}), "messages"},
      {chat({{"messages", "hello"}}), "messages"},
      {chat({{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}), "messages"},
      {chat({{"messages", {{{"content", "x"}}}}}), "messages"},
      {chat({{"messages", {{{"role", "developer"}, {"content", ""}}}}}), "messages"},
      {chat({{"thinking", "maybe"}}), "thinking"},
      {chat({{"thinking", {{"type", "sometimes"}}}}), "thinking.type"},
      {chat({{"model", 5}}), "model"},
  };
  for (const auto& [body, param] : cases)
    EXPECT_EQ(rejected_param(body), param) << body.dump();
  EXPECT_EQ(
      rejected_param({{"messages", {{{"role", "user"}, {"content", std::string(2000, 'x')}}}}}),
      "<none>");
}

TEST(ServerRequestTest, TooLongPromptIsA400ForThePrompt) {
  std::string words;
  for (int i = 0; i < 3000; ++i)
    words += "word" + std::to_string(i) + " ";
  EXPECT_EQ(rejected_param(chat({{"messages", {{{"role", "user"}, {"content", words}}}}})),
            "messages");
  EXPECT_EQ(rejected_param({{"prompt", words}}, false), "prompt");
}

TEST(ServerRequestTest, BodyParsingRefusesWhatIsNotAJsonObject) {
  const auto status_of = [](const std::string& body) {
    try {
      parse_request_body(body);
    } catch (const ApiError& error) {
      return error.status();
    }
    return 200;
  };
  EXPECT_EQ(status_of(R"({"a": 1})"), 200);
  EXPECT_EQ(status_of(""), 400);
  EXPECT_EQ(status_of("[1, 2]"), 400);
  EXPECT_EQ(status_of(R"({"a": )"), 400);
  EXPECT_EQ(status_of("{\"a\": \"\xff\xfe\"}"), 400);                        // invalid UTF-8
  EXPECT_EQ(status_of(R"({"a": "\ud800"})"), 400);                           // lone surrogate
  EXPECT_EQ(status_of(std::string(100, '[') + std::string(100, ']')), 400);  // too deep
  EXPECT_EQ(status_of(std::string(kMaxJsonDepth - 1, '[') + std::string(kMaxJsonDepth - 1, ']')),
            400)
      << "an array is not an object";
}

}  // namespace
}  // namespace longctx::server

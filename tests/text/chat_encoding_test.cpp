// The V4 chat encoding against the official encoder: its four published input/output pairs and
// our own cases (fixtures/chat_cases.json, whose prompts the official encoder wrote).
#include "text/chat_encoding.h"

#include <gtest/gtest.h>

#include "longctx/error.h"
#include "text/python_json.h"
#include "text/special_tokens.h"
#include "text_test_util.h"

namespace longctx::text {
namespace {

OrderedJson read_ordered(const std::string& relative) {
  return OrderedJson::parse(testing::read_test_file(relative));
}

std::string official_output(int index) {
  return testing::read_test_file("fixtures/encoding/test_output_" + std::to_string(index) + ".txt");
}

ChatOptions mode(ThinkingMode thinking_mode) {
  ChatOptions options;
  options.thinking_mode = thinking_mode;
  return options;
}

std::string encode_error(const OrderedJson& messages, const ChatOptions& options = {}) {
  try {
    encode_chat(messages, options);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(ChatEncoding, OfficialPair1ThinkingWithTools) {
  OrderedJson input = read_ordered("fixtures/encoding/test_input_1.json");
  OrderedJson messages = input["messages"];
  messages[0]["tools"] = input["tools"];
  EXPECT_EQ(encode_chat(messages, mode(ThinkingMode::kThinking)), official_output(1));
  // The OpenAI request shape (tools beside the messages) gives the same prompt.
  EXPECT_EQ(encode_chat(input["messages"], input["tools"], mode(ThinkingMode::kThinking)),
            official_output(1));
}

TEST(ChatEncoding, OfficialPair2ThinkingDropsEarlierReasoning) {
  const std::string prompt = encode_chat(read_ordered("fixtures/encoding/test_input_2.json"),
                                         mode(ThinkingMode::kThinking));
  EXPECT_EQ(prompt, official_output(2));
  EXPECT_EQ(prompt.find("The user said hello"), std::string::npos);
}

TEST(ChatEncoding, OfficialPair3DeveloperToolsAndLatestReminder) {
  EXPECT_EQ(encode_chat(read_ordered("fixtures/encoding/test_input_3.json"),
                        mode(ThinkingMode::kThinking)),
            official_output(3));
}

TEST(ChatEncoding, OfficialPair4ChatModeActionTask) {
  EXPECT_EQ(
      encode_chat(read_ordered("fixtures/encoding/test_input_4.json"), mode(ThinkingMode::kChat)),
      official_output(4));
}

ChatOptions case_options(const OrderedJson& c) {
  ChatOptions options;
  options.thinking_mode = parse_thinking_mode(c["thinking_mode"].get<std::string>());
  options.drop_thinking = c.value("drop_thinking", true);
  if (c.contains("reasoning_effort")) {
    options.reasoning_effort = parse_reasoning_effort(c["reasoning_effort"].get<std::string>());
  }
  return options;
}

std::string encode_case(const OrderedJson& c, const ChatOptions& options) {
  const OrderedJson tools = c.contains("tools") ? c["tools"] : OrderedJson();
  return encode_chat(c["messages"], tools, options);
}

TEST(ChatEncoding, OwnCasesMatchTheOfficialEncoder) {
  const OrderedJson cases = read_ordered("fixtures/chat_cases.json")["cases"];
  ASSERT_GE(cases.size(), 15u);
  for (const OrderedJson& c : cases) {
    EXPECT_EQ(encode_case(c, case_options(c)), c["expected_prompt"].get<std::string>())
        << c["name"].get<std::string>();
  }
}

TEST(ChatEncoding, WithoutGenerationPromptOrBos) {
  const OrderedJson cases = read_ordered("fixtures/chat_cases.json")["cases"];
  int open_turns = 0;
  for (const OrderedJson& c : cases) {
    const std::string expected = c["expected_prompt"].get<std::string>();
    const OrderedJson& last = c["messages"].back();
    ChatOptions options = case_options(c);
    options.add_bos = false;
    EXPECT_EQ(encode_case(c, options), expected.substr(tokens::kBos.size()));

    options.add_generation_prompt = false;
    if (last["role"] != "user" || last.contains("task")) continue;
    // The official encoder always opens the assistant turn after a final user message.
    const std::string open_turn =
        std::string(tokens::kAssistant) +
        std::string(options.thinking_mode == ThinkingMode::kThinking ? tokens::kThinkStart
                                                                     : tokens::kThinkEnd);
    ASSERT_TRUE(expected.ends_with(open_turn)) << c["name"].get<std::string>();
    EXPECT_EQ(encode_case(c, options),
              expected.substr(tokens::kBos.size(),
                              expected.size() - tokens::kBos.size() - open_turn.size()));
    ++open_turns;
  }
  EXPECT_GE(open_turns, 5);
}

TEST(ChatEncoding, LenientWhereTheOfficialEncoderWouldCrash) {
  // Content-part arrays, null content and object arguments are accepted.
  const OrderedJson parts = OrderedJson::parse(R"([
    {"role": "system", "content": null},
    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]},
    {"role": "assistant", "content": null, "tool_calls": [{"type": "function",
      "function": {"name": "f", "arguments": {"x": 1, "s": "t"}}}]}])");
  EXPECT_EQ(
      encode_chat(parts, mode(ThinkingMode::kChat)),
      "<｜begin▁of▁sentence｜><｜User｜>a\n\n[Unsupported image_url]\n\nb<｜Assistant｜></think>"
      "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
      "<｜DSML｜parameter name=\"x\" string=\"false\">1</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"s\" string=\"true\">t</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>");
}

TEST(ChatEncoding, ErrorsNameTheMessage) {
  EXPECT_NE(encode_error(OrderedJson::object()).find("messages must be an array"),
            std::string::npos);
  EXPECT_NE(encode_error(OrderedJson::parse(R"([{"role": "user"}, 3])")).find("messages[1]"),
            std::string::npos);
  EXPECT_NE(encode_error(OrderedJson::parse(R"([{"content": "x"}])")).find("\"role\""),
            std::string::npos);
  EXPECT_NE(encode_error(OrderedJson::parse(R"([{"role": "robot", "content": "x"}])"))
                .find("role 'robot'"),
            std::string::npos);
  EXPECT_NE(encode_error(OrderedJson::parse(R"([{"role": "developer", "content": ""}])"))
                .find("developer message needs non-empty content"),
            std::string::npos);
  EXPECT_NE(
      encode_error(OrderedJson::parse(R"([{"role": "user", "content": "x", "task": "dance"}])"))
          .find("task 'dance'"),
      std::string::npos);
  EXPECT_NE(
      encode_error(
          OrderedJson::parse(
              R"([{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}])"))
          .find("messages[0].tool_calls[0].function needs a string \"name\""),
      std::string::npos);
  EXPECT_NE(encode_error(OrderedJson::parse(R"([{"role": "system", "tools": [{"type": "x"}]}])"))
                .find("tools[0] needs a \"function\" object"),
            std::string::npos);
}

TEST(ChatEncoding, ParsesModeAndEffortNames) {
  EXPECT_EQ(parse_thinking_mode("thinking"), ThinkingMode::kThinking);
  EXPECT_EQ(parse_thinking_mode("chat"), ThinkingMode::kChat);
  EXPECT_THROW(parse_thinking_mode("fast"), Error);
  EXPECT_EQ(parse_reasoning_effort("max"), ReasoningEffort::kMax);
  EXPECT_EQ(parse_reasoning_effort("high"), ReasoningEffort::kHigh);
  EXPECT_EQ(parse_reasoning_effort("medium"), ReasoningEffort::kDefault);
  EXPECT_THROW(parse_reasoning_effort("extreme"), Error);
}

TEST(ChatEncoding, PromptTokenizesWithV4MarkersAsSingleTokens) {
  REQUIRE_DEEPSEEK_TOKENIZER(tokenizer);
  const std::string prompt = official_output(1);
  const std::vector<int32_t> ids = tokenizer->encode(prompt, /*allow_special=*/true);
  EXPECT_EQ(ids.front(), tokenizer->bos_id());
  EXPECT_EQ(ids.back(), tokenizer->eos_id());
  const auto count = [&](std::string_view marker) {
    const int32_t id = *tokenizer->token_id(marker);
    return std::count(ids.begin(), ids.end(), id);
  };
  EXPECT_EQ(count(tokens::kUser), 2);
  EXPECT_EQ(count(tokens::kAssistant), 2);
  EXPECT_EQ(count(tokens::kThinkEnd), 2 + 2);  // two turns + two in the tools section
  EXPECT_EQ(tokenizer->decode(ids), prompt);
}

TEST(TextPythonJson, DumpsLikePython) {
  const OrderedJson value = OrderedJson::parse(
      R"({"z": 1, "a": [1.0, 1e-05, 0.0001, 2.5e+20, 1e16, 123456789012345.0, -0.0, 3.14],
          "s": "é \"q\" \\ \n\t\u0001 \u007f 中", "n": null, "b": [true, false], "e": {}, "l": []})");
  EXPECT_EQ(python_json_dumps(value),
            "{\"z\": 1, \"a\": [1.0, 1e-05, 0.0001, 2.5e+20, 1e+16, 123456789012345.0, -0.0, "
            "3.14], \"s\": \"é \\\"q\\\" \\\\ \\n\\t\\u0001 \x7f 中\", \"n\": null, \"b\": [true, "
            "false], \"e\": {}, \"l\": []}");
  EXPECT_EQ(python_float_repr(0.1), "0.1");
  EXPECT_EQ(python_float_repr(1e22), "1e+22");
  EXPECT_EQ(python_float_repr(1.5e-7), "1.5e-07");
  EXPECT_EQ(python_float_repr(100.0), "100.0");
}

}  // namespace
}  // namespace longctx::text

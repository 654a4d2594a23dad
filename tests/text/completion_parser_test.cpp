// The completion parser: the official parser's results on well-formed completions, streaming ==
// one-shot for any split, and graceful degradation of malformed output.
#include "text/completion_parser.h"

#include <gtest/gtest.h>

#include <random>

#include "text/python_json.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"
#include "text_test_util.h"

namespace longctx::text {
namespace {

std::string describe(const ParsedCompletion& result) {
  std::string out = "reasoning=" + python_json_dumps(OrderedJson(result.reasoning_content)) +
                    " content=" + python_json_dumps(OrderedJson(result.content)) + " calls=[";
  for (const ParsedToolCall& call : result.tool_calls)
    out += call.name + call.arguments + ";";
  out += "]";
  if (result.reasoning_closed) out += " closed";
  if (result.saw_eos) out += " eos";
  if (result.malformed) out += " malformed";
  return out;
}

// Feeds `chunks` one by one; checks that the deltas add up to the result.
ParsedCompletion parse_streaming(const std::vector<std::string>& chunks,
                                 CompletionParserOptions options) {
  CompletionParser parser(options);
  ParsedCompletion summed;
  const auto add = [&](const CompletionDelta& delta) {
    summed.reasoning_content += delta.reasoning_content;
    summed.content += delta.content;
    summed.tool_calls.insert(summed.tool_calls.end(), delta.tool_calls.begin(),
                             delta.tool_calls.end());
  };
  for (const std::string& chunk : chunks)
    add(parser.feed(chunk));
  add(parser.finish());
  EXPECT_TRUE(parser.finished());
  ParsedCompletion result = parser.result();
  summed.reasoning_closed = result.reasoning_closed;
  summed.saw_eos = result.saw_eos;
  summed.malformed = result.malformed;
  EXPECT_EQ(describe(summed), describe(result)) << "deltas do not add up to the result";
  return result;
}

// Every split checked: single bytes, fixed sizes, random sizes, and tokens of the test
// tokenizer streamed through the detokenizer (the way the server feeds the parser).
void expect_streaming_equals_one_shot(const std::string& text, CompletionParserOptions options) {
  const std::string one_shot = describe(parse_completion(text, options));
  for (const size_t size : {size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{13}}) {
    std::vector<std::string> chunks;
    for (size_t at = 0; at < text.size(); at += size)
      chunks.push_back(text.substr(at, size));
    ASSERT_EQ(describe(parse_streaming(chunks, options)), one_shot) << "chunks of " << size;
  }
  for (uint32_t seed = 1; seed <= 8; ++seed) {
    ASSERT_EQ(describe(parse_streaming(testing::random_chunks(text, seed, 24), options)), one_shot)
        << "random chunks, seed " << seed;
  }
  const Tokenizer& tokenizer = testing::fixture_test_tokenizer();
  StreamingDetokenizer detokenizer(tokenizer, /*skip_special=*/false);
  std::vector<std::string> pieces;
  for (const int32_t id : tokenizer.encode(text, /*allow_special=*/true)) {
    pieces.push_back(detokenizer.push(id));
  }
  pieces.push_back(detokenizer.flush());
  ASSERT_EQ(describe(parse_streaming(pieces, options)), one_shot) << "token by token";
}

std::vector<OrderedJson> official_completions() {
  const OrderedJson all = OrderedJson::parse(testing::read_test_file("fixtures/chat_cases.json"));
  std::vector<OrderedJson> out;
  for (const OrderedJson& c : all["cases"]) {
    for (const OrderedJson& completion : c["completions"])
      out.push_back(completion);
  }
  for (const OrderedJson& completion : all["official_fixture_completions"]) {
    out.push_back(completion);
  }
  return out;
}

TEST(CompletionParser, MatchesTheOfficialParserOnWellFormedCompletions) {
  const std::vector<OrderedJson> completions = official_completions();
  ASSERT_GE(completions.size(), 15u);
  int with_tools = 0;
  for (const OrderedJson& completion : completions) {
    const std::string text = completion["text"].get<std::string>();
    SCOPED_TRACE(text.substr(0, 80));
    const ParsedCompletion result =
        parse_completion(text, {.thinking = completion["thinking"].get<bool>()});
    EXPECT_EQ(result.reasoning_content, completion["reasoning_content"].get<std::string>());
    EXPECT_EQ(result.content, completion["content"].get<std::string>());
    ASSERT_EQ(result.tool_calls.size(), completion["tool_calls"].size());
    for (size_t i = 0; i < result.tool_calls.size(); ++i) {
      EXPECT_EQ(result.tool_calls[i].name, completion["tool_calls"][i]["name"].get<std::string>());
      EXPECT_EQ(result.tool_calls[i].arguments,
                completion["tool_calls"][i]["arguments"].get<std::string>());
    }
    with_tools += result.tool_calls.empty() ? 0 : 1;
    EXPECT_TRUE(result.saw_eos);
    EXPECT_FALSE(result.malformed);
    EXPECT_EQ(result.reasoning_closed, completion["thinking"].get<bool>());
  }
  EXPECT_GE(with_tools, 3);
}

TEST(CompletionParser, StreamingEqualsOneShotOnEveryFixture) {
  for (const OrderedJson& completion : official_completions()) {
    const std::string text = completion["text"].get<std::string>();
    SCOPED_TRACE(text.substr(0, 80));
    expect_streaming_equals_one_shot(text, {.thinking = completion["thinking"].get<bool>()});
    // Without the end marker (the server strips it) the result differs only in saw_eos.
    const std::string without_eos = text.substr(0, text.size() - tokens::kEos.size());
    expect_streaming_equals_one_shot(without_eos, {.thinking = completion["thinking"].get<bool>()});
  }
}

const std::string kBlockStart = "\n\n<｜DSML｜tool_calls>\n";
const std::string kBlockEnd = "</｜DSML｜tool_calls>";
std::string invoke(const std::string& name, const std::string& parameters) {
  return "<｜DSML｜invoke name=\"" + name + "\">\n" + parameters + "</｜DSML｜invoke>\n";
}
std::string parameter(const std::string& name, const std::string& kind, const std::string& value) {
  return "<｜DSML｜parameter name=\"" + name + "\" string=\"" + kind + "\">" + value +
         "</｜DSML｜parameter>\n";
}

struct DegradeCase {
  const char* what;
  std::string text;
  CompletionParserOptions options;
  std::string expected;  // describe() of the result
};

TEST(CompletionParser, MalformedOutputDegradesToContent) {
  const std::string eos(tokens::kEos);
  const std::string good_call = invoke("f", parameter("a", "true", "x"));
  const std::vector<DegradeCase> cases = {
      {"unclosed reasoning stays reasoning",
       "thinking about it",
       {.thinking = true},
       "reasoning=\"thinking about it\" content=\"\" calls=[]"},
      {"unclosed reasoning as content on request",
       "thinking about it",
       {.thinking = true, .unclosed_reasoning_is_content = true},
       "reasoning=\"\" content=\"thinking about it\" calls=[]"},
      {"held reasoning is released at </think>",
       "a</think>b",
       {.thinking = true, .unclosed_reasoning_is_content = true},
       "reasoning=\"a\" content=\"b\" calls=[] closed"},
      {"end of turn inside reasoning",
       "abc" + eos + "ignored",
       {.thinking = true},
       "reasoning=\"abc\" content=\"\" calls=[] eos"},
      {"a stray <think> at the start is dropped",
       "<think>r</think>c",
       {.thinking = true},
       "reasoning=\"r\" content=\"c\" calls=[] closed"},
      {"think markup in chat mode is content",
       "<think>x</think>y",
       {},
       "reasoning=\"\" content=\"<think>x</think>y\" calls=[]"},
      {"bad string attribute",
       "Hi" + kBlockStart + invoke("f", parameter("a", "maybe", "1")) + kBlockEnd + eos,
       {},
       "reasoning=\"\" content=\"Hi\\n\\n<｜DSML｜tool_calls>\\n<｜DSML｜invoke name=\\\"f\\\">\\n"
       "<｜DSML｜parameter name=\\\"a\\\" string=\\\"maybe\\\">1</｜DSML｜parameter>\\n"
       "</｜DSML｜invoke>\\n</｜DSML｜tool_calls>\" calls=[] eos malformed"},
      {"block cut off",
       kBlockStart + "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\"",
       {},
       "reasoning=\"\" content=\"\\n\\n<｜DSML｜tool_calls>\\n<｜DSML｜invoke name=\\\"f\\\">\\n"
       "<｜DSML｜parameter name=\\\"a\\\"\" calls=[] malformed"},
      {"good call, then garbage",
       kBlockStart + good_call + "garbage" + kBlockEnd + eos,
       {},
       "reasoning=\"\" content=\"\\ngarbage</｜DSML｜tool_calls>\" calls=[f{\"a\": \"x\"};] eos "
       "malformed"},
      {"duplicate parameter",
       kBlockStart + invoke("f", parameter("a", "true", "1") + parameter("a", "true", "2")) +
           kBlockEnd,
       {},
       "reasoning=\"\" content=\"\\n\\n<｜DSML｜tool_calls>\\n<｜DSML｜invoke name=\\\"f\\\">\\n"
       "<｜DSML｜parameter name=\\\"a\\\" string=\\\"true\\\">1</｜DSML｜parameter>\\n"
       "<｜DSML｜parameter name=\\\"a\\\" string=\\\"true\\\">2</｜DSML｜parameter>\\n"
       "</｜DSML｜invoke>\\n</｜DSML｜tool_calls>\" calls=[] malformed"},
      {"text after the block joins the content",
       "a" + kBlockStart + good_call + kBlockEnd + "\nmore" + eos,
       {},
       "reasoning=\"\" content=\"a\\nmore\" calls=[f{\"a\": \"x\"};] eos"},
      {"no blank line before the block",
       "Sure<｜DSML｜tool_calls>" + good_call + kBlockEnd,
       {},
       "reasoning=\"\" content=\"Sure\" calls=[f{\"a\": \"x\"};]"},
      {"values without a string attribute or with invalid JSON",
       kBlockStart +
           invoke("g",
                  "<｜DSML｜parameter name=\"n\">42</｜DSML｜parameter>\n"
                  "<｜DSML｜parameter name=\"s\">hello</｜DSML｜parameter>\n" +
                      parameter("j", "false", "{\"k\": [1, 2]}") +
                      parameter("bad", "false", "not json")) +
           kBlockEnd + eos,
       {},
       "reasoning=\"\" content=\"\" calls=[g{\"n\": 42, \"s\": \"hello\", \"j\": {\"k\": [1, 2]}, "
       "\"bad\": \"not json\"};] eos"},
      {"a tool name with a newline",
       kBlockStart + "<｜DSML｜invoke name=\"a\nb\">\n" + kBlockEnd,
       {},
       "reasoning=\"\" content=\"\\n\\n<｜DSML｜tool_calls>\\n<｜DSML｜invoke "
       "name=\\\"a\\nb\\\">\\n"
       "</｜DSML｜tool_calls>\" calls=[] malformed"},
      {"text after the end of turn is ignored",
       "done" + eos + "more text",
       {},
       "reasoning=\"\" content=\"done\" calls=[] eos"},
      {"empty", "", {.thinking = true}, "reasoning=\"\" content=\"\" calls=[]"},
      {"partial markers at the end are text",
       "a\n\n<｜DSML｜tool",
       {},
       "reasoning=\"\" content=\"a\\n\\n<｜DSML｜tool\" calls=[]"},
      {"partial end marker in reasoning",
       "r</thi",
       {.thinking = true},
       "reasoning=\"r</thi\" content=\"\" calls=[]"},
  };
  for (const DegradeCase& c : cases) {
    SCOPED_TRACE(c.what);
    EXPECT_EQ(describe(parse_completion(c.text, c.options)), c.expected);
    expect_streaming_equals_one_shot(c.text, c.options);
  }
}

TEST(CompletionParser, FeedAfterFinishIsIgnored) {
  CompletionParser parser;
  parser.feed("abc");
  EXPECT_EQ(parser.finish().content, "");
  EXPECT_TRUE(parser.feed("more").empty());
  EXPECT_TRUE(parser.finish().empty());
  EXPECT_EQ(parser.result().content, "abc");
}

TEST(CompletionParser, LongValuesStreamInLinearTime) {
  // 2 MB of parameter value fed a byte at a time: the end-marker search must not rescan.
  std::string value(2 << 20, 'v');
  const std::string text = kBlockStart + invoke("f", parameter("big", "true", value)) + kBlockEnd;
  CompletionParser parser;
  for (const char c : text)
    parser.feed(std::string_view(&c, 1));
  parser.finish();
  ASSERT_EQ(parser.result().tool_calls.size(), 1u);
  EXPECT_EQ(parser.result().tool_calls[0].arguments.size(), value.size() + 11);
}

TEST(CompletionParser, RandomMarkupSoupStreamsLikeOneShot) {
  // Fragments that build and break every marker.
  const std::vector<std::string> fragments = {"<think>",
                                              "</think>",
                                              "</thi",
                                              "<｜end▁of▁sentence｜>",
                                              "<｜end",
                                              "\n\n",
                                              "\n",
                                              " ",
                                              "x",
                                              "名",
                                              "\"",
                                              ">",
                                              "=",
                                              "<｜DSML｜tool_calls>",
                                              "</｜DSML｜tool_calls>",
                                              "<｜DSML｜invoke",
                                              "</｜DSML｜invoke>",
                                              "<｜DSML｜parameter",
                                              "</｜DSML｜parameter>",
                                              " name=\"f\"",
                                              " string=\"true\"",
                                              " string=\"false\"",
                                              "42",
                                              "{\"k\": 1}",
                                              "<｜DSML",
                                              "｜",
                                              "<"};
  std::mt19937 rng(2024);
  for (int round = 0; round < 1500; ++round) {
    std::string text;
    const int parts = std::uniform_int_distribution<int>(0, 40)(rng);
    for (int i = 0; i < parts; ++i)
      text += fragments[rng() % fragments.size()];
    const CompletionParserOptions options{.thinking = (round % 2) == 0,
                                          .unclosed_reasoning_is_content = (round % 3) == 0};
    const std::string one_shot = describe(parse_completion(text, options));
    ASSERT_EQ(describe(parse_streaming(testing::random_chunks(text, round, 9), options)), one_shot)
        << python_json_dumps(OrderedJson(text));
    std::vector<std::string> bytes;
    for (const char c : text)
      bytes.emplace_back(1, c);
    ASSERT_EQ(describe(parse_streaming(bytes, options)), one_shot)
        << python_json_dumps(OrderedJson(text));
  }
}

}  // namespace
}  // namespace longctx::text

// Splits a DeepSeek-V4 completion into reasoning_content, content and tool calls, incrementally
// (feed text deltas as the detokenizer produces them) or in one call; both give the same result
// for any split of the same text, so a streaming response and a non-streaming one agree.
//
// The completion is what the model writes after the prompt's generation marker:
//   thinking mode:  REASONING</think>CONTENT[\n\n<｜DSML｜tool_calls>...</｜DSML｜tool_calls>]<EOS>
//   chat mode:      CONTENT[\n\n<｜DSML｜tool_calls>...</｜DSML｜tool_calls>]<EOS>
// Tool calls are reported one at a time, each when its </｜DSML｜invoke> arrives, with the
// arguments as a JSON object text built like the official parser does ({"k": v, ...}; string
// parameters quoted, the others inserted as written when they are valid JSON).
//
// The parser never throws and never loses text. Broken markup degrades to plain content: a
// tool-call block that does not parse is given back as content from the point the last whole call
// ended (later blocks are then not parsed), text after the block joins the content. Reasoning is
// streamed as it comes; if </think> never arrives (the generation hit its length limit) it stays
// reasoning_content, as DeepSeek's API reports it, unless `unclosed_reasoning_is_content` asks to
// hold reasoning back until </think> and hand an unclosed one over as content. Text after the
// end-of-sentence marker is ignored.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace longctx::text {

struct ParsedToolCall {
  std::string name;
  std::string arguments;  // a JSON object, e.g. {"location": "Beijing", "unit": "celsius"}
};

// What one feed() / finish() call adds to the message.
struct CompletionDelta {
  std::string reasoning_content;
  std::string content;
  std::vector<ParsedToolCall> tool_calls;
  bool empty() const { return reasoning_content.empty() && content.empty() && tool_calls.empty(); }
};

struct ParsedCompletion {
  std::string reasoning_content;
  std::string content;
  std::vector<ParsedToolCall> tool_calls;
  bool reasoning_closed = false;  // </think> was seen
  bool saw_eos = false;           // the model ended its turn with <｜end▁of▁sentence｜>
  bool malformed = false;         // some tool-call markup did not parse and became content
};

struct CompletionParserOptions {
  // The prompt ended with <think>: the completion starts inside the reasoning block.
  bool thinking = false;
  // Hold reasoning back until </think>; an unclosed reasoning block becomes content.
  bool unclosed_reasoning_is_content = false;
};

class CompletionParser {
 public:
  explicit CompletionParser(CompletionParserOptions options = {});

  // Adds the next piece of completion text; returns what became certain.
  CompletionDelta feed(std::string_view text);
  // Ends the completion: flushes text held back while it could still start a marker.
  CompletionDelta finish();

  // Everything parsed so far (the sum of all deltas, plus the flags).
  const ParsedCompletion& result() const { return result_; }
  bool finished() const { return finished_; }

 private:
  enum class State {
    kThinkPrefix,  // thinking mode, nothing read yet: a stray leading <think> is dropped
    kReasoning,
    kContent,    // content; tool-call blocks are recognised
    kToolBlock,  // inside <｜DSML｜tool_calls>
    kAfterToolBlock,
    kPlainContent,  // content after broken markup: no more tool-call parsing
    kDone,
  };
  enum class ToolState {
    kBetweenInvokes,
    kInvokeName,
    kInvokeTagEnd,
    kInvokeBody,
    kParameterName,
    kParameterKind,
    kParameterTagEnd,
    kParameterValue,
  };
  enum class Step { kProgress, kNeedMore, kError };
  enum class ParameterKind { kString, kJson, kUnspecified };
  struct Parameter {
    std::string name;
    std::string value;
    ParameterKind kind;
  };

  void run(CompletionDelta& delta, bool at_end);
  Step step_reasoning(CompletionDelta& delta);
  Step step_content(CompletionDelta& delta, bool tools_allowed);
  Step step_tool_block(CompletionDelta& delta);
  Step step_after_tool_block();
  void fail_tool_block(CompletionDelta& delta);

  void consume(size_t bytes);  // moves bytes from pending_ into raw_
  Step expect_literal(std::string_view literal);
  Step read_attribute(std::string_view name, std::string& value);
  Step expect_tag_end();
  void emit_reasoning(CompletionDelta& delta, std::string_view text);
  void emit_content(CompletionDelta& delta, std::string_view text);
  void emit_tool_call(CompletionDelta& delta);

  CompletionParserOptions options_;
  State state_;
  ToolState tool_state_ = ToolState::kBetweenInvokes;
  std::string pending_;         // text not yet assigned to a field
  std::string raw_;             // markup consumed since the last whole tool call
  std::string held_reasoning_;  // reasoning held back (unclosed_reasoning_is_content)
  size_t search_from_ = 0;      // where the search for a parameter's end resumes
  std::string invoke_name_;
  std::vector<Parameter> parameters_;
  ParsedCompletion result_;
  bool finished_ = false;
};

// One-shot form: feed(text) then finish().
ParsedCompletion parse_completion(std::string_view text, CompletionParserOptions options = {});

}  // namespace longctx::text

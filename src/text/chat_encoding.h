// DeepSeek-V4 chat encoding: OpenAI-shaped messages (+ tools) -> the prompt string, byte for
// byte what the official encoder (encoding_dsv4.py) writes.
//
// Messages are JSON objects with "role" one of system, user, assistant, tool, developer,
// latest_reminder and the OpenAI fields (content, reasoning_content, tool_calls, tool_call_id,
// tools on a system/developer message, response_format) plus V4's "task" (quick-instruction
// token: action, query, authority, domain, title, read_url) and "wo_eos" (assistant turn left
// open, for prefix completion). The rules, as in the official encoder:
//   - tool messages merge into one user turn of <tool_result> blocks, ordered like the calls of
//     the preceding assistant turn; consecutive user messages merge too ("\n\n" between);
//   - thinking mode: the user turn that precedes generation ends with <think>, earlier ones with
//     </think>; assistant turns before the last user turn lose their reasoning (drop_thinking),
//     unless any message defines tools; developer turns before the last user turn are dropped;
//   - chat mode: every assistant turn starts after </think>;
//   - reasoning_effort max prefixes the first message with the "Reasoning Effort" paragraph.
// Where the official encoder would crash, this one is lenient (documented per field in
// chat_encoding.cpp): null content renders as "", OpenAI content-part arrays render their text
// parts joined by "\n\n", tool-call arguments may be a JSON object instead of a string.
//
// Key order of tool schemas is part of the prompt: parse requests into OrderedJson.
#pragma once

#include <string>
#include <string_view>

#include "text/python_json.h"

namespace longctx::text {

enum class ThinkingMode { kChat, kThinking };
enum class ReasoningEffort { kDefault, kHigh, kMax };

struct ChatOptions {
  ThinkingMode thinking_mode = ThinkingMode::kChat;
  // Drop reasoning_content of assistant turns before the last user turn. Ignored (treated as
  // false) when any message defines tools, as in the official encoder.
  bool drop_thinking = true;
  bool add_bos = true;
  // Open the assistant turn after a final user/developer message (<｜Assistant｜> plus <think>
  // or </think>, or the message's task token). False ends the prompt with the last message.
  bool add_generation_prompt = true;
  ReasoningEffort reasoning_effort = ReasoningEffort::kDefault;
};

// Encodes `messages` (a JSON array). Throws Error naming the message and field that is malformed
// (not an object, unknown role, developer turn without content, unknown task, ...).
std::string encode_chat(const OrderedJson& messages, const ChatOptions& options);

// The same for an OpenAI request whose tools sit beside the messages: a non-empty `tools` array
// is attached to the leading system message, or to a new empty system message put first when
// the conversation does not start with one.
std::string encode_chat(const OrderedJson& messages, const OrderedJson& tools,
                        const ChatOptions& options);

// "chat" / "thinking"; throws Error otherwise.
ThinkingMode parse_thinking_mode(std::string_view name);
// "" or "default" / "high" / "max"; throws Error otherwise.
ReasoningEffort parse_reasoning_effort(std::string_view name);

}  // namespace longctx::text

// OpenAI request bodies -> engine requests. A chat request goes through the V4 chat encoding
// (thinking on/off, reasoning_effort, tools, response_format) and the tokenizer; a completion
// takes a string or token-id prompt. Every field is checked here, so a bad request is a 400
// that names the field before anything reaches the engine.
#pragma once

#include <cstdint>
#include <string>

#include "longctx/engine.h"
#include "server/api_error.h"

namespace longctx::text {
class Tokenizer;
}

namespace longctx::server {

enum class ApiKind { kChatCompletion, kCompletion };

// What request parsing needs to know about the served model.
struct ModelLimits {
  const text::Tokenizer* tokenizer = nullptr;  // null: token-id completions only
  int64_t max_model_len = 0;
  int64_t vocab_size = 0;
};

struct InferenceRequest {
  ApiKind kind = ApiKind::kChatCompletion;
  std::string model;  // as the client named it ("" when absent)
  GenerationRequest generation;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;       // report logprobs (chat: logprobs; completions: logprobs >= 0)
  // Chat: the prompt ends inside <think>, so the completion starts with reasoning.
  bool thinking = false;
  // Completions with echo: the prompt text that starts each choice's text.
  std::string echo_text;
};

// The V4 prompt of a chat request body (messages, tools, tool_choice, response_format,
// thinking, reasoning_effort, add_generation_prompt), for chat completions and /tokenize.
struct ChatPrompt {
  std::string text;
  bool thinking = false;  // the prompt ends inside <think>
};
ChatPrompt render_chat_prompt(const OrderedJson& body);

InferenceRequest parse_chat_request(const OrderedJson& body, const ModelLimits& limits);
InferenceRequest parse_completion_request(const OrderedJson& body, const ModelLimits& limits);

// The model name a request body asks for ("" when absent); 400 when it is not a string.
std::string requested_model(const OrderedJson& body);

}  // namespace longctx::server

// Fuzzes the chat encoder with arbitrary JSON: malformed messages must end in longctx::Error,
// never in another exception (a JSON type error would mean an unchecked field) or a crash.
#include <string>

#include "fuzz_target.h"
#include "longctx/error.h"
#include "text/chat_encoding.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto messages = longctx::text::OrderedJson::parse(
      reinterpret_cast<const char*>(data) + 1, reinterpret_cast<const char*>(data) + size, nullptr,
      /*allow_exceptions=*/false);
  if (messages.is_discarded()) return 0;
  longctx::text::ChatOptions options;
  options.thinking_mode =
      (data[0] & 1) ? longctx::text::ThinkingMode::kThinking : longctx::text::ThinkingMode::kChat;
  options.drop_thinking = (data[0] & 2) != 0;
  options.add_generation_prompt = (data[0] & 4) != 0;
  options.reasoning_effort = (data[0] & 8) ? longctx::text::ReasoningEffort::kMax
                                           : longctx::text::ReasoningEffort::kDefault;
  try {
    if (data[0] & 16) {
      const longctx::text::OrderedJson tools =
          messages.is_array() && !messages.empty() ? messages.back() : longctx::text::OrderedJson();
      (void)longctx::text::encode_chat(messages, tools, options);
    } else {
      (void)longctx::text::encode_chat(messages, options);
    }
  } catch (const longctx::Error&) {
    // Malformed input, reported as it should be.
  }
  return 0;
}

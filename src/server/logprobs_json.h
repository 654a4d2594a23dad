// Token logprobs in OpenAI's two shapes: chat ({"content": [{"token", "logprob", "bytes",
// "top_logprobs": [...]}]}) and completions ({"tokens", "token_logprobs", "top_logprobs",
// "text_offset"}).
#pragma once

#include <span>
#include <string>

#include "longctx/engine.h"
#include "server/api_error.h"

namespace longctx::text {
class Tokenizer;
}

namespace longctx::server {

// A token as a client sees it: its text (a partial UTF-8 character shows as U+FFFD) and raw
// bytes. Without a tokenizer, "token_id:N" and no bytes.
struct TokenText {
  std::string text;
  std::string bytes;
};
TokenText token_text(const text::Tokenizer* tokenizer, int32_t token);

// The entries of a chat logprobs "content" array, one per token.
OrderedJson chat_logprob_entries(std::span<const TokenLogprob> logprobs,
                                 const text::Tokenizer* tokenizer);

// Completions logprobs for a run of tokens; `text_offset` is where the run's text starts within
// the choice's text, advanced past it on return.
OrderedJson completion_logprobs(std::span<const TokenLogprob> logprobs,
                                const text::Tokenizer* tokenizer, int64_t* text_offset);
// Appends one completion_logprobs() object to another (non-streaming responses).
void append_completion_logprobs(OrderedJson* into, const OrderedJson& more);

}  // namespace longctx::server

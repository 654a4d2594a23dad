#include "server/logprobs_json.h"

#include <cmath>

#include "text/tokenizer.h"

namespace longctx::server {
namespace {

// OpenAI reports an impossible token as -9999.0 rather than -inf, which JSON cannot carry.
double finite_logprob(float logprob) {
  return std::isfinite(logprob) ? static_cast<double>(logprob) : -9999.0;
}

OrderedJson byte_array(const std::string& bytes) {
  OrderedJson array = OrderedJson::array();
  for (const char byte : bytes)
    array.push_back(static_cast<int>(static_cast<unsigned char>(byte)));
  return array;
}

}  // namespace

TokenText token_text(const text::Tokenizer* tokenizer, int32_t token) {
  if (!tokenizer) return {str_cat("token_id:", token), ""};
  TokenText result;
  if (const std::string* bytes = tokenizer->token_bytes(token)) result.bytes = *bytes;
  const int32_t ids[] = {token};
  result.text = tokenizer->decode(ids, /*skip_special=*/false);
  return result;
}

OrderedJson chat_logprob_entries(std::span<const TokenLogprob> logprobs,
                                 const text::Tokenizer* tokenizer) {
  OrderedJson entries = OrderedJson::array();
  for (const TokenLogprob& logprob : logprobs) {
    const TokenText chosen = token_text(tokenizer, logprob.token);
    OrderedJson top = OrderedJson::array();
    for (const auto& [token, value] : logprob.top) {
      const TokenText alternative = token_text(tokenizer, token);
      top.push_back(OrderedJson{{"token", alternative.text},
                                {"logprob", finite_logprob(value)},
                                {"bytes", byte_array(alternative.bytes)}});
    }
    entries.push_back(OrderedJson{{"token", chosen.text},
                                  {"logprob", finite_logprob(logprob.logprob)},
                                  {"bytes", byte_array(chosen.bytes)},
                                  {"top_logprobs", std::move(top)}});
  }
  return entries;
}

OrderedJson completion_logprobs(std::span<const TokenLogprob> logprobs,
                                const text::Tokenizer* tokenizer, int64_t* text_offset) {
  OrderedJson tokens = OrderedJson::array(), token_logprobs = OrderedJson::array();
  OrderedJson top_logprobs = OrderedJson::array(), offsets = OrderedJson::array();
  for (const TokenLogprob& logprob : logprobs) {
    const TokenText chosen = token_text(tokenizer, logprob.token);
    tokens.push_back(chosen.text);
    token_logprobs.push_back(finite_logprob(logprob.logprob));
    // The sampled token is listed among the top ones, as vLLM and OpenAI's legacy API do.
    OrderedJson top = OrderedJson::object();
    for (const auto& [token, value] : logprob.top)
      top[token_text(tokenizer, token).text] = finite_logprob(value);
    if (!top.contains(chosen.text)) top[chosen.text] = finite_logprob(logprob.logprob);
    top_logprobs.push_back(std::move(top));
    offsets.push_back(*text_offset);
    *text_offset += static_cast<int64_t>(chosen.text.size());
  }
  return OrderedJson{{"tokens", std::move(tokens)},
                     {"token_logprobs", std::move(token_logprobs)},
                     {"top_logprobs", std::move(top_logprobs)},
                     {"text_offset", std::move(offsets)}};
}

void append_completion_logprobs(OrderedJson* into, const OrderedJson& more) {
  if (into->is_null()) {
    *into = more;
    return;
  }
  for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
    for (const OrderedJson& item : more[key])
      (*into)[key].push_back(item);
  }
}

}  // namespace longctx::server

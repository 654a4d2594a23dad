// Engine events -> OpenAI response objects. One builder per request: it takes the request's
// events in order and gives the streaming chunks each event makes (chat.completion.chunk /
// text_completion), then, after the final event, the whole non-streaming response
// (chat.completion / text_completion). Chat output runs through the V4 completion parser, so
// reasoning_content, content and tool_calls agree between the two forms.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "longctx/engine.h"
#include "server/openai_request.h"

namespace longctx::server {

struct ResponseMeta {
  std::string id;     // chatcmpl-... / cmpl-...
  std::string model;  // the served model name the response reports
  int64_t created = 0;
  const text::Tokenizer* tokenizer = nullptr;  // for logprob token strings; may be null
};

class ResponseBuilder {
 public:
  virtual ~ResponseBuilder() = default;

  // Chunks to send before any token (chat: each choice's assistant role).
  virtual std::vector<OrderedJson> start_chunks() = 0;
  // Takes the next event; returns the streaming chunks it makes (none may be due).
  virtual std::vector<OrderedJson> add(const RequestEvent& event) = 0;
  // The whole response; call after the final event.
  virtual OrderedJson response() const = 0;
  // The last streaming chunk when stream_options.include_usage: usage and no choices.
  OrderedJson usage_chunk() const;

  bool finished() const { return finished_; }
  // Why the engine failed the request ("" when it did not).
  const std::string& error() const { return error_; }
  const Usage& usage() const { return usage_; }

 protected:
  // `response_object` / `chunk_object`: "chat.completion" / "chat.completion.chunk", ...
  ResponseBuilder(ResponseMeta meta, const InferenceRequest& request, const char* response_object,
                  const char* chunk_object);
  // id, object, created, model, empty choices (+ usage: null in chunks with include_usage).
  OrderedJson envelope(bool chunk) const;
  // Records usage, error and completion from a final event.
  void note_final(const RequestEvent& event);

  ResponseMeta meta_;
  int64_t n_ = 1;
  bool include_usage_ = false;
  bool logprobs_ = false;

 private:
  const char* response_object_;
  const char* chunk_object_;
  bool finished_ = false;
  std::string error_;
  Usage usage_;
};

// The builder for the request's kind (chat_response.cpp, completion_response.cpp).
std::unique_ptr<ResponseBuilder> make_response_builder(const InferenceRequest& request,
                                                       ResponseMeta meta);
std::unique_ptr<ResponseBuilder> make_chat_response_builder(const InferenceRequest& request,
                                                            ResponseMeta meta);
std::unique_ptr<ResponseBuilder> make_completion_response_builder(const InferenceRequest& request,
                                                                  ResponseMeta meta);

// {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details":
// {"cached_tokens"}}
OrderedJson usage_json(const Usage& usage);

// OpenAI's name for why a choice ended; a stop with tool calls is "tool_calls".
const char* finish_reason_name(FinishReason reason, bool has_tool_calls);

}  // namespace longctx::server

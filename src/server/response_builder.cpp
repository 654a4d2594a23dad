#include "server/response_builder.h"

namespace longctx::server {

ResponseBuilder::ResponseBuilder(ResponseMeta meta, const InferenceRequest& request,
                                 const char* response_object, const char* chunk_object)
    : meta_(std::move(meta)),
      n_(request.generation.sampling.n),
      include_usage_(request.stream && request.include_usage),
      logprobs_(request.logprobs),
      response_object_(response_object),
      chunk_object_(chunk_object) {}

OrderedJson ResponseBuilder::envelope(bool chunk) const {
  OrderedJson out = OrderedJson::object();
  out["id"] = meta_.id;
  out["object"] = chunk ? chunk_object_ : response_object_;
  out["created"] = meta_.created;
  out["model"] = meta_.model;
  out["choices"] = OrderedJson::array();
  // With include_usage every chunk carries "usage": null until the last one, as OpenAI's do.
  if (chunk && include_usage_) out["usage"] = nullptr;
  return out;
}

void ResponseBuilder::note_final(const RequestEvent& event) {
  if (!event.final) return;
  finished_ = true;
  error_ = event.error;
  usage_ = event.usage;
}

OrderedJson ResponseBuilder::usage_chunk() const {
  OrderedJson chunk = envelope(/*chunk=*/true);
  chunk["usage"] = usage_json(usage_);
  return chunk;
}

OrderedJson usage_json(const Usage& usage) {
  return OrderedJson{
      {"prompt_tokens", usage.prompt_tokens},
      {"completion_tokens", usage.completion_tokens},
      {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
      {"prompt_tokens_details", OrderedJson{{"cached_tokens", usage.cached_tokens}}}};
}

const char* finish_reason_name(FinishReason reason, bool has_tool_calls) {
  switch (reason) {
    case FinishReason::kStop:
      return has_tool_calls ? "tool_calls" : "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
  }
  return "stop";
}

std::unique_ptr<ResponseBuilder> make_response_builder(const InferenceRequest& request,
                                                       ResponseMeta meta) {
  if (request.kind == ApiKind::kChatCompletion)
    return make_chat_response_builder(request, std::move(meta));
  return make_completion_response_builder(request, std::move(meta));
}

}  // namespace longctx::server

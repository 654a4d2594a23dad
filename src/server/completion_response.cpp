// text_completion objects, streaming and not.
#include <optional>

#include "server/logprobs_json.h"
#include "server/response_builder.h"

namespace longctx::server {
namespace {

struct CompletionChoice {
  std::string text;
  OrderedJson logprobs;     // null until the first token with logprobs
  int64_t text_offset = 0;  // where the next token's text starts
  bool echoed = false;
  std::optional<FinishReason> finish;
};

class CompletionResponseBuilder : public ResponseBuilder {
 public:
  CompletionResponseBuilder(const InferenceRequest& request, ResponseMeta meta)
      : ResponseBuilder(std::move(meta), request, "text_completion", "text_completion"),
        echo_text_(request.echo_text),
        choices_(static_cast<size_t>(n_)) {}

  std::vector<OrderedJson> start_chunks() override { return {}; }

  std::vector<OrderedJson> add(const RequestEvent& event) override {
    std::vector<OrderedJson> chunks;
    for (const SequenceDelta& delta : event.deltas) {
      if (delta.index < 0 || delta.index >= n_) continue;
      CompletionChoice& choice = choices_[static_cast<size_t>(delta.index)];
      std::string text;
      if (!choice.echoed) {
        choice.echoed = true;
        text = echo_text_;
        choice.text_offset = static_cast<int64_t>(echo_text_.size());
      }
      text += delta.text;
      choice.text += text;
      OrderedJson logprobs = nullptr;
      if (logprobs_ && !delta.logprobs.empty()) {
        logprobs = completion_logprobs(delta.logprobs, meta_.tokenizer, &choice.text_offset);
        append_completion_logprobs(&choice.logprobs, logprobs);
      }
      if (delta.finish) choice.finish = *delta.finish;
      if (text.empty() && logprobs.is_null() && !delta.finish) continue;
      OrderedJson chunk = envelope(/*chunk=*/true);
      chunk["choices"].push_back(OrderedJson{
          {"index", delta.index},
          {"text", std::move(text)},
          {"logprobs", std::move(logprobs)},
          {"finish_reason",
           delta.finish ? OrderedJson(finish_reason_name(*delta.finish, false)) : OrderedJson()}});
      chunks.push_back(std::move(chunk));
    }
    note_final(event);
    return chunks;
  }

  OrderedJson response() const override {
    OrderedJson out = envelope(/*chunk=*/false);
    for (size_t i = 0; i < choices_.size(); ++i) {
      const CompletionChoice& choice = choices_[i];
      OrderedJson logprobs = choice.logprobs;
      if (logprobs_ && logprobs.is_null()) {
        int64_t offset = 0;
        logprobs = completion_logprobs({}, meta_.tokenizer, &offset);
      }
      out["choices"].push_back(
          OrderedJson{{"index", i},
                      {"text", choice.echoed ? choice.text : echo_text_ + choice.text},
                      {"logprobs", logprobs_ ? logprobs : OrderedJson()},
                      {"finish_reason",
                       finish_reason_name(choice.finish.value_or(FinishReason::kStop), false)}});
    }
    out["usage"] = usage_json(usage());
    return out;
  }

 private:
  std::string echo_text_;
  std::vector<CompletionChoice> choices_;
};

}  // namespace

std::unique_ptr<ResponseBuilder> make_completion_response_builder(const InferenceRequest& request,
                                                                  ResponseMeta meta) {
  return std::make_unique<CompletionResponseBuilder>(request, std::move(meta));
}

}  // namespace longctx::server

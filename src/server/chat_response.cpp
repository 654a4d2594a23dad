// chat.completion and chat.completion.chunk objects. Each choice's text goes through its own
// CompletionParser: reasoning_content, content and tool_calls come out of the same parse in both
// forms.
#include <optional>

#include "server/logprobs_json.h"
#include "server/random_id.h"
#include "server/response_builder.h"
#include "text/completion_parser.h"

namespace longctx::server {
namespace {

struct ChatChoice {
  explicit ChatChoice(bool thinking) : parser(text::CompletionParserOptions{thinking, false}) {}

  text::CompletionParser parser;
  std::string reasoning;
  std::string content;
  OrderedJson tool_calls = OrderedJson::array();  // whole calls, as the message reports them
  OrderedJson logprobs = OrderedJson::array();    // "content" entries
  std::optional<FinishReason> finish;
};

void append(text::CompletionDelta& into, text::CompletionDelta more) {
  into.reasoning_content += more.reasoning_content;
  into.content += more.content;
  for (auto& call : more.tool_calls)
    into.tool_calls.push_back(std::move(call));
}

class ChatResponseBuilder : public ResponseBuilder {
 public:
  ChatResponseBuilder(const InferenceRequest& request, ResponseMeta meta)
      : ResponseBuilder(std::move(meta), request, "chat.completion", "chat.completion.chunk"),
        thinking_(request.thinking) {
    for (int64_t i = 0; i < n_; ++i)
      choices_.emplace_back(thinking_);
  }

  std::vector<OrderedJson> start_chunks() override {
    std::vector<OrderedJson> chunks;
    for (int64_t i = 0; i < n_; ++i) {
      OrderedJson chunk = envelope(/*chunk=*/true);
      chunk["choices"].push_back(
          OrderedJson{{"index", i},
                      {"delta", OrderedJson{{"role", "assistant"}, {"content", ""}}},
                      {"logprobs", nullptr},
                      {"finish_reason", nullptr}});
      chunks.push_back(std::move(chunk));
    }
    return chunks;
  }

  std::vector<OrderedJson> add(const RequestEvent& event) override {
    std::vector<OrderedJson> chunks;
    for (const SequenceDelta& delta : event.deltas) {
      if (delta.index < 0 || delta.index >= n_) continue;
      ChatChoice& choice = choices_[static_cast<size_t>(delta.index)];
      text::CompletionDelta parsed = choice.parser.feed(delta.text);
      if (delta.finish) {
        append(parsed, choice.parser.finish());
        choice.finish = *delta.finish;
      }
      OrderedJson message_delta = OrderedJson::object();
      if (!parsed.reasoning_content.empty()) {
        choice.reasoning += parsed.reasoning_content;
        message_delta["reasoning_content"] = parsed.reasoning_content;
      }
      if (!parsed.content.empty()) {
        choice.content += parsed.content;
        message_delta["content"] = parsed.content;
      }
      if (!parsed.tool_calls.empty()) {
        OrderedJson calls = OrderedJson::array();
        for (const text::ParsedToolCall& call : parsed.tool_calls) {
          OrderedJson whole{
              {"id", random_id("call_")},
              {"type", "function"},
              {"function", OrderedJson{{"name", call.name}, {"arguments", call.arguments}}}};
          OrderedJson streamed{{"index", choice.tool_calls.size()}};
          for (auto it = whole.begin(); it != whole.end(); ++it)
            streamed[it.key()] = it.value();
          calls.push_back(std::move(streamed));
          choice.tool_calls.push_back(std::move(whole));
        }
        message_delta["tool_calls"] = std::move(calls);
      }
      OrderedJson logprobs = nullptr;
      if (logprobs_ && !delta.logprobs.empty()) {
        OrderedJson entries = chat_logprob_entries(delta.logprobs, meta_.tokenizer);
        for (const OrderedJson& entry : entries)
          choice.logprobs.push_back(entry);
        logprobs = OrderedJson{{"content", std::move(entries)}};
      }
      if (message_delta.empty() && logprobs.is_null() && !delta.finish) continue;
      OrderedJson chunk = envelope(/*chunk=*/true);
      chunk["choices"].push_back(OrderedJson{
          {"index", delta.index},
          {"delta", std::move(message_delta)},
          {"logprobs", std::move(logprobs)},
          {"finish_reason",
           delta.finish ? OrderedJson(finish_reason_name(*delta.finish, !choice.tool_calls.empty()))
                        : OrderedJson()}});
      chunks.push_back(std::move(chunk));
    }
    note_final(event);
    return chunks;
  }

  OrderedJson response() const override {
    OrderedJson out = envelope(/*chunk=*/false);
    for (size_t i = 0; i < choices_.size(); ++i) {
      const ChatChoice& choice = choices_[i];
      OrderedJson message{{"role", "assistant"}};
      // OpenAI's content is null for a reply that only calls tools.
      message["content"] = choice.content.empty() && !choice.tool_calls.empty()
                               ? OrderedJson()
                               : OrderedJson(choice.content);
      if (thinking_ || !choice.reasoning.empty()) message["reasoning_content"] = choice.reasoning;
      if (!choice.tool_calls.empty()) message["tool_calls"] = choice.tool_calls;
      out["choices"].push_back(OrderedJson{
          {"index", i},
          {"message", std::move(message)},
          {"logprobs", logprobs_ ? OrderedJson{{"content", choice.logprobs}} : OrderedJson()},
          {"finish_reason", finish_reason_name(choice.finish.value_or(FinishReason::kStop),
                                               !choice.tool_calls.empty())}});
    }
    out["usage"] = usage_json(usage());
    return out;
  }

 private:
  bool thinking_;
  std::vector<ChatChoice> choices_;
};

}  // namespace

std::unique_ptr<ResponseBuilder> make_chat_response_builder(const InferenceRequest& request,
                                                            ResponseMeta meta) {
  return std::make_unique<ChatResponseBuilder>(request, std::move(meta));
}

}  // namespace longctx::server

#include "scripted_engine.h"

#include <condition_variable>
#include <deque>
#include <mutex>

#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace longctx::testing {
namespace {

// Events computed at submit time; next() hands them out, abort() cuts them short.
class ScriptedHandle : public RequestHandle {
 public:
  ScriptedHandle(std::string id, std::deque<RequestEvent> events)
      : id_(std::move(id)), events_(std::move(events)) {}

  const std::string& id() const override { return id_; }

  bool next(RequestEvent* event, std::chrono::milliseconds) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (events_.empty()) return false;
    *event = std::move(events_.front());
    events_.pop_front();
    return true;
  }

  void abort() override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (events_.empty()) return;
    RequestEvent final = std::move(events_.back());
    events_.clear();
    for (SequenceDelta& delta : final.deltas)
      delta.finish = FinishReason::kAbort;
    events_.push_back(std::move(final));
  }

 private:
  std::string id_;
  std::mutex mutex_;
  std::deque<RequestEvent> events_;
};

}  // namespace

ScriptedEngine::ScriptedEngine(std::shared_ptr<const text::Tokenizer> tokenizer, Script script,
                               EngineOptions options)
    : tokenizer_(std::move(tokenizer)), script_(std::move(script)), options_(std::move(options)) {}

std::shared_ptr<RequestHandle> ScriptedEngine::submit(GenerationRequest request) {
  const SamplingParams& params = request.sampling;
  params.validate(static_cast<int64_t>(request.prompt.size()), max_model_len(), 1024);
  if (options_.max_waiting_requests == 0)
    throw QueueFullError("the waiting queue is full (0 requests)");
  const std::string prompt = tokenizer_->decode(request.prompt);
  std::vector<int32_t> reply = tokenizer_->encode(script_(prompt), /*allow_special=*/true);
  reply.push_back(tokenizer_->eos_id());

  std::deque<RequestEvent> events;
  Usage usage;
  usage.prompt_tokens = static_cast<int64_t>(request.prompt.size());
  for (int64_t index = 0; index < params.n; ++index) {
    text::StreamingDetokenizer detokenizer(*tokenizer_);
    for (size_t i = 0; i < reply.size(); ++i) {
      SequenceDelta delta;
      delta.index = index;
      delta.tokens = {reply[i]};
      const bool eos = reply[i] == tokenizer_->eos_id();
      if (!eos) delta.text = detokenizer.push(reply[i]);
      if (params.logprobs >= 0) delta.logprobs.push_back({reply[i], -0.5f, {{reply[i], -0.5f}}});
      ++usage.completion_tokens;
      const bool at_limit = static_cast<int64_t>(i + 1) >= params.max_tokens;
      if (eos || at_limit) {
        delta.text += detokenizer.flush();
        delta.finish = eos ? FinishReason::kStop : FinishReason::kLength;
      }
      RequestEvent event;
      event.deltas.push_back(std::move(delta));
      events.push_back(std::move(event));
      if (eos || at_limit) break;
    }
  }
  RequestEvent final;
  final.final = true;
  final.usage = usage;
  events.push_back(std::move(final));
  return std::make_shared<ScriptedHandle>(request.id, std::move(events));
}

std::string weather_script(const std::string& prompt) {
  const bool thinking =
      prompt.size() >= text::tokens::kThinkStart.size() &&
      prompt.compare(prompt.size() - text::tokens::kThinkStart.size(),
                     text::tokens::kThinkStart.size(), text::tokens::kThinkStart) == 0;
  std::string reply = thinking ? "The user wants the weather.</think>" : "";
  if (prompt.find("<tool_result>") != std::string::npos) {
    return reply + "It is sunny in Paris, 22 degrees.";
  }
  if (prompt.find("get_weather") != std::string::npos) {
    const std::string dsml(text::tokens::kDsml);
    return reply + "Let me look that up.\n\n<" + dsml + "tool_calls>\n<" + dsml +
           "invoke name=\"get_weather\">\n<" + dsml +
           "parameter name=\"location\" string=\"true\">Paris</" + dsml + "parameter>\n<" + dsml +
           "parameter name=\"days\" string=\"false\">3</" + dsml + "parameter>\n</" + dsml +
           "invoke>\n</" + dsml + "tool_calls>";
  }
  return reply + "Hello from the script.";
}

}  // namespace longctx::testing

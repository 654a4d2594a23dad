// An Engine that answers with scripted text instead of running a model, so that the server's
// handling of tool calls and reasoning can be driven end to end (the random-weight test model
// never writes DSML). Replies are tokenized with the real tokenizer and streamed one token per
// event with text from the real StreamingDetokenizer, then the end-of-sentence token, as the
// real engine does; max_tokens cuts them short with finish reason length.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "longctx/engine.h"

namespace longctx::text {
class Tokenizer;
}

namespace longctx::testing {

class ScriptedEngine : public Engine {
 public:
  // Picks the completion text for a prompt (decoded with special tokens).
  using Script = std::function<std::string(const std::string& prompt_text)>;

  ScriptedEngine(std::shared_ptr<const text::Tokenizer> tokenizer, Script script,
                 EngineOptions options = {});

  std::shared_ptr<RequestHandle> submit(GenerationRequest request) override;
  void abort(const std::string&) override {}
  EngineMetrics metrics() const override { return {}; }
  int64_t max_model_len() const override { return 4096; }
  const EngineOptions& options() const override { return options_; }
  void shutdown(bool) override {}
  int64_t kv_pages_in_use() const override { return 0; }

 private:
  std::shared_ptr<const text::Tokenizer> tokenizer_;
  Script script_;
  EngineOptions options_;
};

// The weather assistant the tool-call tests talk to: offered a get_weather tool it calls it
// for Paris (location "Paris", days 3); given the tool's result it answers with it; otherwise
// it says hello. In thinking mode each reply starts with a line of reasoning.
std::string weather_script(const std::string& prompt_text);

}  // namespace longctx::testing

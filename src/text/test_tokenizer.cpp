// write_test_tokenizer (declared in tokenizer.h): a small tokenizer in exactly the released
// format, so the random-weight test model can be driven end to end with text. It uses
// DeepSeek's pre-tokenizer chain, so it exercises the same code paths as the real tokenizer.
#include <filesystem>
#include <fstream>

#include "longctx/error.h"
#include "text/bpe_trainer.h"
#include "text/python_json.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace longctx::text {
namespace {

namespace fs = std::filesystem;

// Special tokens first, so BOS is id 0 and EOS id 1 as in the released tokenizer.
struct SpecialToken {
  std::string_view content;
  bool special;  // skipped by decode(skip_special = true); chat markers stay visible
};
constexpr SpecialToken kSpecialTokens[] = {
    {tokens::kBos, true},
    {tokens::kEos, true},
    {tokens::kPad, true},
    {tokens::kUser, false},
    {tokens::kAssistant, false},
    {tokens::kThinkStart, false},
    {tokens::kThinkEnd, false},
    {tokens::kDsml, false},
    {tokens::kLatestReminder, false},
    {tokens::kTaskAction, false},
    {tokens::kTaskQuery, false},
    {tokens::kTaskAuthority, false},
    {tokens::kTaskDomain, false},
    {tokens::kTaskTitle, false},
    {tokens::kTaskReadUrl, false},
    {tokens::kTaskExtractedUrl, false},
};
constexpr size_t kSpecialCount = std::size(kSpecialTokens);

// The corpus the merges are learned from: prose, chat markup, code, numbers and some Chinese,
// so that common words of test prompts become single tokens.
constexpr std::string_view kCorpus = R"corpus(
Hello, longctx! This is a small test model with random weights. It reads a prompt, runs the
transformer blocks on the CPU or on the GPU, and writes one token after another. The answer
makes no sense, because the weights are random, but the path from text to ids and back to text
is the same path that the real model takes. Hello world. Hello again, world!

The quick brown fox jumps over the lazy dog. The five boxing wizards jump quickly. How vexingly
quick daft zebras jump! Pack my box with five dozen liquor jugs. Sphinx of black quartz, judge
my vow. A wizard's job is to vex chumps quickly in fog.

You are a helpful assistant. The user asks a question and the assistant answers it. What is the
weather in Beijing today? It is sunny and warm, with a light wind from the north. What is the
capital of France? The capital of France is Paris. Can you help me write a function that sorts a
list of numbers? Sure, here is a short function that does it, and a test that checks it.

When the model thinks, it first writes its reasoning, then closes the thinking block and answers.
When the model calls a tool, it writes a block of tool calls with a name and parameters for each
call, then stops and waits for the tool result. The result comes back in the next user turn.

Long context matters: a document of a hundred thousand tokens must fit in the cache, and the
attention must only read the blocks that it needs. The cache stores compressed entries for old
positions and full entries for the sliding window of recent positions.

def sort_numbers(values):
    """Returns the values in ascending order."""
    result = list(values)
    result.sort()
    return result

for (int i = 0; i < count; ++i) {
  if (values[i] > best) {
    best = values[i];
  }
}

std::vector<int32_t> ids = tokenizer.encode(text);
std::string text = tokenizer.decode(ids);
return {"name": "get_weather", "arguments": {"location": "Beijing", "unit": "celsius"}};

0 1 2 3 4 5 6 7 8 9 10 11 12 16 32 64 100 128 256 512 1000 1024 2048 4096 8192 65536
3.14159 2.71828 1.41421 0.5 0.25 99.9% 2024-01-01 2025-10-17 12:30:45 +86 (010) 1234-5678

你好，世界！今天天气很好，我们去公园散步吧。这是一个用于测试的小模型，它的权重是随机的。
深度求索公司创造了这个助手。请问北京今天的天气怎么样？北京今天晴，气温二十二度。
人工智能正在改变世界，长上下文模型可以阅读很长的文档。

Thank you! You're welcome. Good morning, good afternoon, good evening, and good night.
The end.
)corpus";

// DeepSeek's pre-tokenizer chain: digit runs of up to three, CJK runs, then words, punctuation
// and white space, then the byte alphabet.
OrderedJson pre_tokenizer_spec() {
  const std::string word_pattern =
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}"
      "\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
  const auto split = [](const std::string& pattern) {
    return OrderedJson{{"type", "Split"},
                       {"pattern", {{"Regex", pattern}}},
                       {"behavior", "Isolated"},
                       {"invert", false}};
  };
  return OrderedJson{{"type", "Sequence"},
                     {"pretokenizers",
                      {split("\\p{N}{1,3}"), split("[一-龥぀-ゟ゠-ヿ]+"), split(word_pattern),
                       OrderedJson{{"type", "ByteLevel"},
                                   {"add_prefix_space", false},
                                   {"trim_offsets", true},
                                   {"use_regex", false}}}}};
}

OrderedJson added_token_config(std::string_view content) {
  return OrderedJson{{"__type", "AddedToken"}, {"content", std::string(content)},
                     {"lstrip", false},        {"normalized", true},
                     {"rstrip", false},        {"single_word", false}};
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("write_test_tokenizer: cannot create ", path.string());
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  if (!out) fail("write_test_tokenizer: cannot write ", path.string());
}

}  // namespace

void write_test_tokenizer(const std::string& dir, int64_t vocab_size) {
  const int64_t minimum = static_cast<int64_t>(kSpecialCount) + 256;
  if (vocab_size < minimum) {
    fail("write_test_tokenizer: vocab_size ", vocab_size, " is too small: a byte-level tokenizer ",
         "with the V4 chat tokens needs at least ", minimum, " ids");
  }
  const OrderedJson pre_tokenizer = pre_tokenizer_spec();

  // Count the corpus words as the real pre-tokenizer splits them.
  std::map<std::string, int64_t> word_counts;
  {
    const PreTokenizer splitter = PreTokenizer::from_json(Json::parse(pre_tokenizer.dump()));
    PieceBuffer buffer;
    splitter.split(kCorpus, buffer);
    for (const std::string_view piece : buffer.pieces)
      ++word_counts[std::string(piece)];
  }
  std::set<std::string> reserved;
  for (const SpecialToken& token : kSpecialTokens)
    reserved.emplace(token.content);
  const BpeTrainingResult trained =
      train_byte_level_bpe(word_counts, static_cast<size_t>(vocab_size - minimum), reserved);

  OrderedJson vocab = OrderedJson::object();
  OrderedJson added_tokens = OrderedJson::array();
  int32_t next_id = 0;
  for (const SpecialToken& token : kSpecialTokens) {
    vocab[std::string(token.content)] = next_id;
    added_tokens.push_back(OrderedJson{{"id", next_id},
                                       {"content", std::string(token.content)},
                                       {"single_word", false},
                                       {"lstrip", false},
                                       {"rstrip", false},
                                       {"normalized", false},
                                       {"special", token.special}});
    ++next_id;
  }
  for (const std::string& token : trained.tokens)
    vocab[token] = next_id++;
  OrderedJson merges = OrderedJson::array();
  for (const auto& [left, right] : trained.merges)
    merges.push_back(left + " " + right);

  const OrderedJson tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added_tokens},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", OrderedJson::array()}}},
      {"pre_tokenizer", pre_tokenizer},
      {"post_processor",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", false},
        {"use_regex", true}}},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", merges}}}};
  const OrderedJson config = {{"add_bos_token", false},
                              {"add_eos_token", false},
                              {"bos_token", added_token_config(tokens::kBos)},
                              {"clean_up_tokenization_spaces", false},
                              {"eos_token", added_token_config(tokens::kEos)},
                              {"legacy", true},
                              {"model_max_length", 1048576},
                              {"pad_token", added_token_config(tokens::kEos)},
                              {"sp_model_kwargs", OrderedJson::object()},
                              {"unk_token", nullptr},
                              {"tokenizer_class", "PreTrainedTokenizerFast"}};

  std::error_code error;
  fs::create_directories(dir, error);
  if (error) fail("write_test_tokenizer: cannot create ", dir, ": ", error.message());
  write_file(fs::path(dir) / "tokenizer.json", tokenizer.dump(2) + "\n");
  write_file(fs::path(dir) / "tokenizer_config.json", config.dump(2) + "\n");
}

}  // namespace longctx::text

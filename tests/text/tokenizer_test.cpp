// Tokenizer as a whole: loading (and its errors), added tokens from tokenizer_config.json,
// allow_special, ill-formed input, threads, and the test tokenizer writer.
#include "text/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

#include "common/mapped_file.h"
#include "longctx/error.h"
#include "text/special_tokens.h"
#include "text/utf8.h"
#include "text_test_util.h"

namespace longctx::text {
namespace {

namespace fs = std::filesystem;

// A fresh folder under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() / (std::string("longctx_text_") + info->test_suite_name() +
                                         "_" + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string load_error(const std::string& dir) {
  try {
    Tokenizer::load(dir);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

Json test_tokenizer_json() {
  return parse_json(testing::read_test_file("fixtures/test_tokenizer/tokenizer.json"), "fixture");
}

TEST(TokenizerLoad, ErrorsSayWhatWasExpected) {
  TempDir dir;
  EXPECT_NE(load_error(dir.path()).find("tokenizer.json does not exist"), std::string::npos);

  write(dir.file("tokenizer.json"), "{\"model\": ");
  EXPECT_NE(load_error(dir.path()).find("is not valid JSON"), std::string::npos);

  Json json = test_tokenizer_json();
  json["model"]["type"] = "Unigram";
  write(dir.file("tokenizer.json"), json.dump());
  EXPECT_NE(load_error(dir.path()).find("model type 'Unigram' is not supported"),
            std::string::npos);

  json = test_tokenizer_json();
  json["decoder"] = {{"type", "Metaspace"}};
  write(dir.file("tokenizer.json"), json.dump());
  EXPECT_NE(load_error(dir.path()).find("decoder must be ByteLevel"), std::string::npos);

  json = test_tokenizer_json();
  write(dir.file("tokenizer.json"), json.dump());
  write(dir.file("tokenizer_config.json"), R"({"bos_token": "<nope>"})");
  EXPECT_NE(load_error(dir.path()).find("bos_token '<nope>' is not a token"), std::string::npos);

  write(dir.file("tokenizer_config.json"),
        R"({"added_tokens_decoder": {"900": {"content": "<think>"}}})");
  EXPECT_NE(load_error(dir.path()).find("has id 900 but tokenizer.json gives it id 5"),
            std::string::npos);
}

TEST(TokenizerLoad, ConfigAddsTokens) {
  TempDir dir;
  write(dir.file("tokenizer.json"), test_tokenizer_json().dump());
  write(dir.file("tokenizer_config.json"), R"({
    "bos_token": "<｜begin▁of▁sentence｜>",
    "eos_token": {"content": "<｜end▁of▁sentence｜>"},
    "added_tokens_decoder": {"1030": {"content": "<tool>", "special": false}},
    "additional_special_tokens": ["<extra>", "<｜User｜>"]})");
  const auto tokenizer = Tokenizer::load(dir.path());
  EXPECT_EQ(tokenizer->bos_id(), 0);
  EXPECT_EQ(tokenizer->eos_id(), 1);
  EXPECT_EQ(tokenizer->token_id("<tool>"), 1030);
  // A missing additional special token gets the next id; an existing one keeps its id.
  EXPECT_EQ(tokenizer->token_id("<extra>"), 1031);
  EXPECT_TRUE(tokenizer->is_special(1031));
  EXPECT_EQ(tokenizer->token_id("<｜User｜>"), 3);
  EXPECT_EQ(tokenizer->vocab_size(), 1032u);
  EXPECT_EQ(
      tokenizer->encode("a<tool>b<extra>", /*allow_special=*/true),
      (std::vector<int32_t>{*tokenizer->token_id("a"), 1030, *tokenizer->token_id("b"), 1031}));
  // Ids between the vocabulary and the added tokens have no token: decode skips them.
  EXPECT_EQ(tokenizer->decode(std::vector<int32_t>{1029, 1030, 5000, -3}), "<tool>");
}

TEST(TokenizerEncode, SpecialTokensOnlyWhenAllowed) {
  const Tokenizer& tokenizer = testing::fixture_test_tokenizer();
  const std::string text = "<｜User｜>hi<think>";
  const std::vector<int32_t> special = tokenizer.encode(text, /*allow_special=*/true);
  ASSERT_GE(special.size(), 3u);
  EXPECT_EQ(special.front(), *tokenizer.token_id(tokens::kUser));
  EXPECT_EQ(special.back(), *tokenizer.token_id(tokens::kThinkStart));
  const std::vector<int32_t> plain = tokenizer.encode(text);
  for (const int32_t id : plain) {
    EXPECT_EQ(tokenizer.added_tokens().token_for_id(id), nullptr) << id;
  }
  EXPECT_EQ(tokenizer.decode(plain), text);
  EXPECT_EQ(tokenizer.decode(special), text);
  EXPECT_TRUE(tokenizer.encode("").empty());
}

TEST(TokenizerEncode, IllFormedInputIsRepairedNotRejected) {
  const Tokenizer& tokenizer = testing::fixture_test_tokenizer();
  const std::string bad = "ok \xFF\xC0 bye \xE4\xBD";
  const std::vector<int32_t> ids = tokenizer.encode(bad, true);
  EXPECT_EQ(ids, tokenizer.encode(utf8::to_valid(bad), true));
  EXPECT_EQ(tokenizer.decode(ids), utf8::to_valid(bad));
}

TEST(TokenizerEncode, SameIdsFromManyThreads) {
  const Tokenizer& tokenizer = testing::fixture_test_tokenizer();
  const std::string text = testing::golden_corpus().front().bytes + " 你好 🤖 12345";
  const std::vector<int32_t> expected = tokenizer.encode(text, true);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i)
        results[t] = tokenizer.encode(text, true);
    });
  }
  for (std::thread& thread : threads)
    thread.join();
  for (const auto& result : results)
    EXPECT_EQ(result, expected);
}

TEST(TestTokenizer, WritesTheV4ChatTokensAndByteAlphabet) {
  TempDir dir;
  write_test_tokenizer(dir.path(), 1024);
  const auto tokenizer = Tokenizer::load(dir.path());
  EXPECT_EQ(tokenizer->vocab_size(), 1024u);
  EXPECT_EQ(tokenizer->bos_id(), 0);
  EXPECT_EQ(tokenizer->eos_id(), 1);
  EXPECT_EQ(*tokenizer->token_text(0), tokens::kBos);
  EXPECT_EQ(*tokenizer->token_text(1), tokens::kEos);
  for (const std::string_view marker :
       {tokens::kUser, tokens::kAssistant, tokens::kThinkStart, tokens::kThinkEnd, tokens::kDsml,
        tokens::kLatestReminder, tokens::kTaskAction, tokens::kTaskQuery, tokens::kTaskAuthority,
        tokens::kTaskDomain, tokens::kTaskTitle, tokens::kTaskReadUrl, tokens::kTaskExtractedUrl}) {
    const std::optional<int32_t> id = tokenizer->token_id(marker);
    ASSERT_TRUE(id) << marker;
    EXPECT_EQ(tokenizer->encode(marker, true), std::vector<int32_t>{*id}) << marker;
    EXPECT_FALSE(tokenizer->is_special(*id)) << marker << " must survive skip_special";
  }
  EXPECT_TRUE(tokenizer->is_special(0));
  // Any bytes encode and decode back; training made common words single tokens.
  std::string all_bytes;
  for (int b = 1; b < 256; ++b)
    all_bytes.push_back(static_cast<char>(b));
  EXPECT_EQ(tokenizer->decode(tokenizer->encode(all_bytes)), utf8::to_valid(all_bytes));
  EXPECT_EQ(tokenizer->encode("Hello").size(), 1u);
  for (const int32_t id : tokenizer->encode("Hello, longctx! 你好，世界 🤖"))
    EXPECT_LT(id, 1024);
}

TEST(TestTokenizer, MatchesTheFixtureTheGoldenIdsWereMadeWith) {
  // fixtures/test_tokenizer was written by write_test_tokenizer(dir, 1024) and checked against
  // the reference library (golden/test_tokenizer_golden.json). If the writer changes, copy its
  // new output there and regenerate the golden file (golden/generate_golden.py).
  TempDir dir;
  write_test_tokenizer(dir.path(), 1024);
  EXPECT_EQ(read_text_file(dir.file("tokenizer.json"), 1 << 20),
            testing::read_test_file("fixtures/test_tokenizer/tokenizer.json"));
  EXPECT_EQ(read_text_file(dir.file("tokenizer_config.json"), 1 << 20),
            testing::read_test_file("fixtures/test_tokenizer/tokenizer_config.json"));
}

TEST(TestTokenizer, SizesAndLimits) {
  TempDir dir;
  // Large vocabularies (the flash / pro presets) stop when the corpus runs out of pairs.
  write_test_tokenizer(dir.path(), 129280);
  const auto large = Tokenizer::load(dir.path());
  EXPECT_GT(large->vocab_size(), 1024u);
  EXPECT_LE(large->vocab_size(), 129280u);
  write_test_tokenizer(dir.path(), 272);  // specials + bytes, no merges
  EXPECT_EQ(Tokenizer::load(dir.path())->vocab_size(), 272u);
  try {
    write_test_tokenizer(dir.path(), 100);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("vocab_size 100 is too small"), std::string::npos);
  }
}

TEST(TokenizerEncode, DeepSeekRoundTripsDecodedText) {
  REQUIRE_DEEPSEEK_TOKENIZER(tokenizer);
  for (const testing::CorpusEntry& entry : testing::golden_corpus()) {
    const std::vector<int32_t> ids = tokenizer->encode(entry.bytes, true);
    EXPECT_EQ(tokenizer->encode(tokenizer->decode(ids), true), ids) << entry.name;
  }
}

}  // namespace
}  // namespace longctx::text

// StreamingDetokenizer: pushing ids one at a time gives decode()'s text, never a partial
// character.
#include <gtest/gtest.h>

#include "text/tokenizer.h"
#include "text/utf8.h"
#include "text_test_util.h"

namespace longctx::text {
namespace {

struct Streamed {
  std::string text;
  size_t empty_pushes = 0;
};

Streamed stream(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip_special) {
  StreamingDetokenizer detokenizer(tokenizer, skip_special);
  Streamed out;
  for (const int32_t id : ids) {
    const std::string piece = detokenizer.push(id);
    EXPECT_TRUE(utf8::is_valid(piece)) << "push(" << id << ") emitted a broken character";
    if (piece.empty()) ++out.empty_pushes;
    out.text += piece;
  }
  out.text += detokenizer.flush();
  return out;
}

void expect_streaming_equals_decode(const Tokenizer& tokenizer) {
  for (const testing::CorpusEntry& entry : testing::golden_corpus()) {
    const std::vector<int32_t> ids = tokenizer.encode(entry.bytes, /*allow_special=*/true);
    EXPECT_EQ(stream(tokenizer, ids, false).text, tokenizer.decode(ids)) << entry.name;
    EXPECT_EQ(stream(tokenizer, ids, true).text, tokenizer.decode(ids, true)) << entry.name;
  }
}

TEST(StreamingDetokenizer, EqualsDecodeOnTheCorpusWithTestTokenizer) {
  expect_streaming_equals_decode(testing::fixture_test_tokenizer());
}

TEST(StreamingDetokenizer, EqualsDecodeOnTheCorpusWithDeepSeekTokenizer) {
  REQUIRE_DEEPSEEK_TOKENIZER(tokenizer);
  expect_streaming_equals_decode(*tokenizer);
}

TEST(StreamingDetokenizer, HoldsCharactersSplitAcrossTokens) {
  // The test tokenizer has no token for 🤖 (4 bytes): it takes several byte tokens, and
  // nothing may come out before the last one.
  const Tokenizer& tokenizer = testing::fixture_test_tokenizer();
  const std::vector<int32_t> ids = tokenizer.encode("🤖");
  ASSERT_GT(ids.size(), 1u);
  StreamingDetokenizer detokenizer(tokenizer);
  for (size_t i = 0; i + 1 < ids.size(); ++i)
    EXPECT_EQ(detokenizer.push(ids[i]), "");
  EXPECT_EQ(detokenizer.push(ids.back()), "🤖");
  EXPECT_EQ(detokenizer.flush(), "");
}

TEST(StreamingDetokenizer, BrokenBytesBecomeReplacementCharacters) {
  const Tokenizer& tokenizer = testing::fixture_test_tokenizer();
  const int32_t lead_byte = *tokenizer.token_id("ä");  // byte 0xE4 in the byte alphabet
  StreamingDetokenizer detokenizer(tokenizer);
  EXPECT_EQ(detokenizer.push(lead_byte), "");
  // A new character instead of the continuation: the held byte is ill-formed.
  EXPECT_EQ(detokenizer.push(*tokenizer.token_id("A")),
            std::string(utf8::kReplacementCharacter) + "A");
  EXPECT_EQ(detokenizer.push(lead_byte), "");
  // Still incomplete at the end: flush gives U+FFFD.
  EXPECT_EQ(detokenizer.flush(), std::string(utf8::kReplacementCharacter));
  EXPECT_EQ(detokenizer.flush(), "");
}

TEST(StreamingDetokenizer, SkipsSpecialTokensAndUnknownIds) {
  const Tokenizer& tokenizer = testing::fixture_test_tokenizer();
  StreamingDetokenizer skipping(tokenizer, /*skip_special=*/true);
  EXPECT_EQ(skipping.push(tokenizer.eos_id()), "");
  EXPECT_EQ(skipping.push(*tokenizer.token_id("</think>")), "</think>");
  EXPECT_EQ(skipping.push(-1), "");
  EXPECT_EQ(skipping.push(1 << 30), "");
  StreamingDetokenizer keeping(tokenizer, /*skip_special=*/false);
  EXPECT_EQ(keeping.push(tokenizer.eos_id()), "<｜end▁of▁sentence｜>");
}

}  // namespace
}  // namespace longctx::text

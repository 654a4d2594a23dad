// Fuzzes the tokenizer with arbitrary bytes: encode never fails, decode(encode(x)) gives x back
// (ill-formed UTF-8 repaired), and the streaming detokenizer agrees with decode.
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include <unistd.h>

#include "fuzz_target.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace {

std::unique_ptr<longctx::text::Tokenizer> tokenizer;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // LONGCTX_FUZZ_TOKENIZER_DIR picks a real tokenizer (e.g. the npm DeepSeek one); by default
  // the test tokenizer, which uses DeepSeek's pre-tokenizer chain.
  if (const char* dir = std::getenv("LONGCTX_FUZZ_TOKENIZER_DIR")) {
    tokenizer = longctx::text::Tokenizer::load(dir);
    return 0;
  }
  const auto dir = std::filesystem::temp_directory_path() /
                   ("longctx_fuzz_tokenizer_" + std::to_string(::getpid()));
  longctx::text::write_test_tokenizer(dir.string(), 1024);
  tokenizer = longctx::text::Tokenizer::load(dir.string());
  std::filesystem::remove_all(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const bool allow_special = size % 2 == 1;
  const std::vector<int32_t> ids = tokenizer->encode(input, allow_special);
  for (const int32_t id : ids)
    FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < tokenizer->vocab_size());
  const std::string decoded = tokenizer->decode(ids);
  FUZZ_CHECK(decoded == longctx::text::utf8::to_valid(input));

  longctx::text::StreamingDetokenizer detokenizer(*tokenizer, /*skip_special=*/false);
  std::string streamed;
  for (const int32_t id : ids) {
    const std::string piece = detokenizer.push(id);
    FUZZ_CHECK(longctx::text::utf8::is_valid(piece));
    streamed += piece;
  }
  streamed += detokenizer.flush();
  FUZZ_CHECK(streamed == decoded);
  return 0;
}

// Fuzzes the completion parser: never throws, and any split of the input into chunks gives the
// one-shot result. The first byte picks the options and the chunk sizes.
#include <string>
#include <vector>

#include "fuzz_target.h"
#include "text/completion_parser.h"

namespace {

std::string summary(const longctx::text::ParsedCompletion& result) {
  std::string out = result.reasoning_content + '\x01' + result.content + '\x01';
  for (const auto& call : result.tool_calls)
    out += call.name + '\x02' + call.arguments + '\x03';
  out += result.reasoning_closed ? 'c' : '-';
  out += result.saw_eos ? 'e' : '-';
  out += result.malformed ? 'm' : '-';
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t control = data[0];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const longctx::text::CompletionParserOptions options{
      .thinking = (control & 1) != 0, .unclosed_reasoning_is_content = (control & 2) != 0};
  const std::string one_shot = summary(longctx::text::parse_completion(text, options));

  longctx::text::CompletionParser parser(options);
  const size_t chunk = 1 + (control >> 2) % 17;
  for (size_t at = 0; at < text.size(); at += chunk) {
    parser.feed(std::string_view(text).substr(at, chunk));
  }
  parser.finish();
  FUZZ_CHECK(summary(parser.result()) == one_shot);
  return 0;
}

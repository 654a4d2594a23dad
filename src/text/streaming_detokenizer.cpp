// StreamingDetokenizer (declared in tokenizer.h): a character can span several tokens (a CJK
// character or an emoji is often 2-4 byte tokens), so bytes of an unfinished character wait in
// `pending_` until the next token completes it or proves it ill-formed.
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace longctx::text {

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamingDetokenizer::push(int32_t id) {
  const std::string* bytes = tokenizer_.token_bytes(id);
  if (bytes == nullptr || (skip_special_ && tokenizer_.is_special(id))) return {};
  pending_.append(*bytes);
  std::string out;
  const size_t consumed = utf8::append_lossy(out, pending_, /*final=*/false);
  pending_.erase(0, consumed);
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out;
  utf8::append_lossy(out, pending_, /*final=*/true);
  pending_.clear();
  return out;
}

}  // namespace longctx::text

// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (+ tokenizer_config.json),
// producing the ids the `tokenizers` library produces, plus its streaming detokenizer.
//
// Pipeline of encode(): repair ill-formed UTF-8 (each maximal ill-formed subsequence becomes
// U+FFFD, as Python's decode(errors="replace") does) -> added tokens (only when allowed) ->
// normalizer -> pre-tokenizer chain (Split with the file's regexes, Digits, ByteLevel) -> BPE.
// Decoding maps byte-level characters back to bytes and repairs the result the same way.
//
// A Tokenizer is immutable after load(): encode and decode may run on many threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "text/added_vocabulary.h"
#include "text/bpe_model.h"
#include "text/normalizer.h"
#include "text/pre_tokenizer.h"

namespace longctx::text {

class Tokenizer {
 public:
  // Loads DIR/tokenizer.json (+ DIR/tokenizer_config.json when present). Throws longctx::Error.
  static std::unique_ptr<Tokenizer> load(const std::string& dir);
  // The same from explicit paths; `tokenizer_config_path` may be empty. The config contributes
  // bos_token / eos_token and extra added tokens: "added_tokens_decoder" (id -> token, the way
  // releases add tokens such as V4's <｜latest_reminder｜>) and "additional_special_tokens"
  // (given fresh ids after the largest one when missing).
  static std::unique_ptr<Tokenizer> load_files(const std::string& tokenizer_json_path,
                                               const std::string& tokenizer_config_path);
  // From already-parsed JSON; `config` may be null.
  static std::unique_ptr<Tokenizer> from_json(const Json& tokenizer, const Json& config);

  // Special/added tokens in `text` are matched only when allow_special is true; otherwise they are
  // encoded as ordinary text.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = false) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  std::optional<int32_t> token_id(
      std::string_view token) const;          // exact vocab / added-token lookup
  int32_t bos_id() const { return bos_id_; }  // from tokenizer_config.json bos_token, -1 if none
  int32_t eos_id() const { return eos_id_; }
  size_t vocab_size() const { return decoded_.size(); }  // 1 + largest id

  // The bytes `id` decodes to (before UTF-8 repair), or null for an id with no token.
  const std::string* token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;
  // The token string as stored in the vocabulary ("Ġthe"), or null.
  const std::string* token_text(int32_t id) const;
  const AddedVocabulary& added_tokens() const { return added_; }

 private:
  // State of one encode() call: scratch space, and the ids of pieces seen earlier in the call
  // (text repeats its words; looking them up is much cheaper than merging them again).
  struct EncodeState {
    PieceBuffer buffer;
    BpeScratch scratch;
    std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> seen;  // offset, count
  };

  Tokenizer() = default;
  // Pre-tokenizes and BPE-encodes `text` (normalized, free of added tokens).
  void encode_text(std::string_view text, std::vector<int32_t>& ids, EncodeState& state) const;

  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  BpeModel model_;
  AddedVocabulary added_;
  std::vector<std::string> decoded_;  // by id: the bytes the decoder turns it into
  std::vector<uint8_t> has_token_;
  std::vector<uint8_t> special_;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
};

// Turns ids into text incrementally; never emits a partial UTF-8 character; handles characters
// split across tokens.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special = true);
  std::string push(int32_t id);  // newly completed text (may be empty)
  std::string flush();           // whatever remains (invalid trailing bytes become U+FFFD)

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;  // bytes of a character not yet complete
};

// Writes a small byte-level BPE tokenizer.json + tokenizer_config.json into dir, with ids <
// vocab_size, bos id 0 = "<｜begin▁of▁sentence｜>", eos id 1 = "<｜end▁of▁sentence｜>", all V4 chat
// special tokens (User, Assistant, think, DSML, latest_reminder, ...) and merges learned by a tiny
// BPE trainer on a built-in corpus, so that generate --prompt works on the small test model (vocab
// 1024). Throws Error when vocab_size cannot hold the special tokens and the 256 byte tokens.
void write_test_tokenizer(const std::string& dir, int64_t vocab_size);

}  // namespace longctx::text

// The "normalizer" section of tokenizer.json: text rewrites applied before pre-tokenization.
//
// Supported: null, Sequence, Replace (String or Regex pattern), Prepend, Strip. DeepSeek's
// tokenizers use an empty Sequence. Unicode normalization forms (NFC, NFKC, ...) would need ICU
// and are refused with an error that names them rather than silently skipped.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/json_util.h"
#include "text/regex.h"

namespace longctx::text {

class Normalizer {
 public:
  // Builds the normalizer described by `spec` (the JSON value of "normalizer"); throws Error
  // naming an unsupported type.
  static Normalizer from_json(const Json& spec);

  bool is_identity() const { return steps_.empty(); }
  std::string apply(std::string_view text) const;

 private:
  struct Replace {
    std::string literal;           // used when `regex` is null
    std::shared_ptr<Regex> regex;  // shared so that Normalizer stays copyable
    std::string content;
  };
  struct Prepend {
    std::string prefix;
  };
  struct Strip {
    bool left;
    bool right;
  };
  using Step = std::variant<Replace, Prepend, Strip>;

  static void add_steps(const Json& spec, std::vector<Step>& steps);

  std::vector<Step> steps_;
};

}  // namespace longctx::text

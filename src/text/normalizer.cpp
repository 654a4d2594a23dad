#include "text/normalizer.h"

#include "longctx/error.h"
#include "text/utf8.h"

namespace longctx::text {
namespace {

std::string string_field(const Json& spec, const char* key, const char* what) {
  if (!spec.contains(key) || !spec[key].is_string()) {
    fail("tokenizer.json: ", what, " needs a string \"", key, "\"");
  }
  return spec[key].get<std::string>();
}

// Byte length of the leading (or trailing) run of White_Space characters.
size_t leading_space(std::string_view text) {
  size_t at = 0;
  while (at < text.size()) {
    const utf8::Sequence sequence = utf8::decode_one(text.substr(at));
    if (sequence.status != utf8::SequenceStatus::kValid ||
        !utf8::is_white_space(sequence.code_point)) {
      break;
    }
    at += sequence.length;
  }
  return at;
}

size_t trailing_space(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80)
      --start;
    const utf8::Sequence sequence = utf8::decode_one(text.substr(start, end - start));
    if (sequence.status != utf8::SequenceStatus::kValid ||
        !utf8::is_white_space(sequence.code_point)) {
      break;
    }
    end = start;
  }
  return text.size() - end;
}

}  // namespace

Normalizer Normalizer::from_json(const Json& spec) {
  Normalizer normalizer;
  add_steps(spec, normalizer.steps_);
  return normalizer;
}

void Normalizer::add_steps(const Json& spec, std::vector<Step>& steps) {
  if (spec.is_null()) return;
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    fail("tokenizer.json: a normalizer must be an object with a string \"type\", found ",
         json_type_name(spec));
  }
  const std::string type = spec["type"].get<std::string>();
  if (type == "Sequence") {
    if (!spec.contains("normalizers") || !spec["normalizers"].is_array()) {
      fail("tokenizer.json: normalizer Sequence needs an array \"normalizers\"");
    }
    for (const Json& child : spec["normalizers"])
      add_steps(child, steps);
  } else if (type == "Replace") {
    if (!spec.contains("pattern") || !spec["pattern"].is_object()) {
      fail("tokenizer.json: normalizer Replace needs an object \"pattern\"");
    }
    const Json& pattern = spec["pattern"];
    Replace replace;
    replace.content = string_field(spec, "content", "normalizer Replace");
    if (pattern.contains("Regex")) {
      replace.regex = std::make_shared<Regex>(string_field(pattern, "Regex", "Replace pattern"));
    } else {
      replace.literal = string_field(pattern, "String", "Replace pattern");
    }
    steps.emplace_back(std::move(replace));
  } else if (type == "Prepend") {
    steps.emplace_back(Prepend{string_field(spec, "prepend", "normalizer Prepend")});
  } else if (type == "Strip") {
    const bool left = spec.value("strip_left", true);
    const bool right = spec.value("strip_right", true);
    steps.emplace_back(Strip{left, right});
  } else {
    fail("tokenizer.json: normalizer type '", type,
         "' is not supported (supported: Sequence, Replace, Prepend, Strip)");
  }
}

std::string Normalizer::apply(std::string_view text) const {
  std::string current(text);
  for (const Step& step : steps_) {
    if (const auto* replace = std::get_if<Replace>(&step)) {
      std::vector<Match> matches;
      if (replace->regex) {
        replace->regex->find_all(current, matches);
      } else if (!replace->literal.empty()) {
        for (size_t at = current.find(replace->literal); at != std::string::npos;
             at = current.find(replace->literal, at + replace->literal.size())) {
          matches.push_back({at, at + replace->literal.size()});
        }
      }
      if (matches.empty()) continue;
      std::string next;
      size_t copied = 0;
      for (const Match& match : matches) {
        next.append(current, copied, match.start - copied);
        next.append(replace->content);
        copied = match.end;
      }
      next.append(current, copied, std::string::npos);
      current = std::move(next);
    } else if (const auto* prepend = std::get_if<Prepend>(&step)) {
      if (!current.empty()) current.insert(0, prepend->prefix);
    } else if (const auto* strip = std::get_if<Strip>(&step)) {
      if (strip->right) current.resize(current.size() - trailing_space(current));
      if (strip->left) current.erase(0, leading_space(current));
    }
  }
  return current;
}

}  // namespace longctx::text

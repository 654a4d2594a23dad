#include "text/tokenizer.h"

#include <algorithm>
#include <climits>
#include <deque>
#include <filesystem>

#include "common/mapped_file.h"
#include "longctx/error.h"
#include "text/byte_level.h"
#include "text/utf8.h"

namespace longctx::text {
namespace {

namespace fs = std::filesystem;

// Real tokenizer.json files are a few MB to a few tens of MB.
constexpr size_t kMaxTokenizerJsonBytes = size_t{512} << 20;
constexpr size_t kMaxTokenizerConfigBytes = size_t{64} << 20;
// Longer pieces are rare and rarely repeat; they are not worth a cache entry.
constexpr size_t kMaxCachedPieceBytes = 64;

bool bool_field(const Json& object, const char* key, bool fallback) {
  if (!object.contains(key) || object[key].is_null()) return fallback;
  if (!object[key].is_boolean()) fail("tokenizer: \"", key, "\" must be a boolean");
  return object[key].get<bool>();
}

// An AddedToken as tokenizer.json and tokenizer_config.json write it.
AddedToken parse_added_token(const Json& entry, int64_t id, const std::string& where) {
  if (!entry.is_object() || !entry.contains("content") || !entry["content"].is_string()) {
    fail(where, ": an added token must be an object with a string \"content\"");
  }
  if (id < 0 || id >= kMaxTokenId) {
    fail(where, ": added token id ", id, " is outside 0..", kMaxTokenId - 1);
  }
  AddedToken token;
  token.content = entry["content"].get<std::string>();
  if (token.content.empty()) fail(where, ": added token ", id, " has empty content");
  token.id = static_cast<int32_t>(id);
  token.special = bool_field(entry, "special", false);
  token.single_word = bool_field(entry, "single_word", false);
  token.lstrip = bool_field(entry, "lstrip", false);
  token.rstrip = bool_field(entry, "rstrip", false);
  token.normalized = bool_field(entry, "normalized", !token.special);
  return token;
}

// bos_token / eos_token: a string, an AddedToken object, or null.
std::optional<std::string> token_content(const Json& config, const char* key) {
  if (!config.is_object() || !config.contains(key) || config[key].is_null()) return std::nullopt;
  const Json& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  fail("tokenizer_config.json: \"", key, "\" must be a string or an object with \"content\"");
}

void check_decoder(const Json& decoder) {
  if (decoder.is_object() && decoder.value("type", std::string()) == "ByteLevel") return;
  if (decoder.is_object() && decoder.value("type", std::string()) == "Sequence" &&
      decoder.contains("decoders") && decoder["decoders"].is_array() &&
      decoder["decoders"].size() == 1) {
    check_decoder(decoder["decoders"][0]);
    return;
  }
  fail("tokenizer.json: decoder must be ByteLevel (byte-level BPE), found ",
       decoder.is_object() ? decoder.value("type", std::string("?")) : json_type_name(decoder));
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& dir) {
  const fs::path json_path = fs::path(dir) / "tokenizer.json";
  const fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  if (!fs::exists(json_path)) fail("tokenizer: ", json_path.string(), " does not exist");
  return load_files(json_path.string(), fs::exists(config_path) ? config_path.string() : "");
}

std::unique_ptr<Tokenizer> Tokenizer::load_files(const std::string& tokenizer_json_path,
                                                 const std::string& tokenizer_config_path) {
  const Json tokenizer =
      parse_json(read_text_file(tokenizer_json_path, kMaxTokenizerJsonBytes), tokenizer_json_path);
  Json config;
  if (!tokenizer_config_path.empty()) {
    config = parse_json(read_text_file(tokenizer_config_path, kMaxTokenizerConfigBytes),
                        tokenizer_config_path);
  }
  try {
    return from_json(tokenizer, config);
  } catch (const Error& error) {
    fail(tokenizer_json_path, ": ", error.what());
  }
}

std::unique_ptr<Tokenizer> Tokenizer::from_json(const Json& json, const Json& config) try {
  if (!json.is_object()) fail("tokenizer.json must hold an object, found ", json_type_name(json));
  if (!config.is_null() && !config.is_object()) {
    fail("tokenizer_config.json must hold an object, found ", json_type_name(config));
  }
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  Tokenizer& t = *tokenizer;
  const Json null_json;
  t.normalizer_ =
      Normalizer::from_json(json.contains("normalizer") ? json["normalizer"] : null_json);
  t.pre_tokenizer_ =
      PreTokenizer::from_json(json.contains("pre_tokenizer") ? json["pre_tokenizer"] : null_json);
  check_decoder(json.contains("decoder") ? json["decoder"] : null_json);
  if (!json.contains("model")) fail("tokenizer.json has no \"model\"");
  t.model_ = BpeModel::from_json(json["model"], t.pre_tokenizer_.byte_level());

  if (json.contains("added_tokens") && !json["added_tokens"].is_null()) {
    if (!json["added_tokens"].is_array()) fail("tokenizer.json: \"added_tokens\" must be an array");
    for (const Json& entry : json["added_tokens"]) {
      if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer()) {
        fail("tokenizer.json: every added token needs an integer \"id\"");
      }
      t.added_.add(parse_added_token(entry, entry["id"].get<int64_t>(), "tokenizer.json"));
    }
  }

  if (config.is_object() && config.contains("added_tokens_decoder")) {
    const Json& decoder = config["added_tokens_decoder"];
    if (!decoder.is_object()) {
      fail("tokenizer_config.json: \"added_tokens_decoder\" must map ids to tokens");
    }
    for (auto it = decoder.begin(); it != decoder.end(); ++it) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(it.key(), &used);
        if (used != it.key().size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0) {
        fail("tokenizer_config.json: added_tokens_decoder key '", it.key(), "' is not a token id");
      }
      const AddedToken token = parse_added_token(it.value(), id, "tokenizer_config.json");
      const std::optional<int32_t> existing = t.added_.id_of(token.content);
      if (existing && *existing != token.id) {
        fail("tokenizer_config.json: added token '", token.content, "' has id ", token.id,
             " but tokenizer.json gives it id ", *existing);
      }
      t.added_.add(token);
    }
  }

  int64_t max_id = t.model_.max_id();
  for (const AddedToken& token : t.added_.tokens())
    max_id = std::max<int64_t>(max_id, token.id);

  if (config.is_object() && config.contains("additional_special_tokens") &&
      config["additional_special_tokens"].is_array()) {
    for (const Json& entry : config["additional_special_tokens"]) {
      Json object = entry.is_string() ? Json{{"content", entry}, {"special", true}} : entry;
      if (object.is_object() && !object.contains("special")) object["special"] = true;
      AddedToken token = parse_added_token(object, 0, "tokenizer_config.json");
      if (t.added_.id_of(token.content) || t.model_.token_to_id(token.content)) continue;
      token.id = static_cast<int32_t>(++max_id);
      t.added_.add(token);
    }
  }
  t.added_.build(t.normalizer_);

  // The decoder runs on every token, added ones included, as in tokenizers.
  t.decoded_.assign(static_cast<size_t>(max_id + 1), std::string());
  t.has_token_.assign(t.decoded_.size(), 0);
  t.special_.assign(t.decoded_.size(), 0);
  for (int32_t id = 0; id <= t.model_.max_id(); ++id) {
    if (const std::string* token = t.model_.token_for_id(id)) {
      t.decoded_[static_cast<size_t>(id)] = byte_level::decode_token(*token);
      t.has_token_[static_cast<size_t>(id)] = 1;
    }
  }
  for (const AddedToken& token : t.added_.tokens()) {
    const auto id = static_cast<size_t>(token.id);
    // tokenizers decodes a normalized added token as its normalized content (observed with
    // tokenizers 0.23: "ony" under a Prepend("▁") normalizer decodes to "▁ony").
    t.decoded_[id] = byte_level::decode_token(token.normalized ? t.normalizer_.apply(token.content)
                                                               : token.content);
    t.has_token_[id] = 1;
    t.special_[id] = token.special ? 1 : 0;
  }

  for (const auto& [key, target] :
       {std::pair{"bos_token", &t.bos_id_}, std::pair{"eos_token", &t.eos_id_}}) {
    if (const std::optional<std::string> content = token_content(config, key)) {
      const std::optional<int32_t> id = t.token_id(*content);
      if (!id) fail("tokenizer_config.json: ", key, " '", *content, "' is not a token");
      *target = *id;
    }
  }
  return tokenizer;
} catch (const Json::exception& error) {
  // A field of the wrong JSON type somewhere the checks above do not look.
  fail("tokenizer.json / tokenizer_config.json: unexpected structure: ", error.what());
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  if (const std::optional<int32_t> id = added_.id_of(token)) return id;
  return model_.token_to_id(token);
}

const std::string* Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= decoded_.size() ||
      !has_token_[static_cast<size_t>(id)]) {
    return nullptr;
  }
  return &decoded_[static_cast<size_t>(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[static_cast<size_t>(id)];
}

const std::string* Tokenizer::token_text(int32_t id) const {
  for (const AddedToken& token : added_.tokens()) {
    if (token.id == id) return &token.content;
  }
  return model_.token_for_id(id);
}

void Tokenizer::encode_text(std::string_view text, std::vector<int32_t>& ids,
                            EncodeState& state) const {
  if (text.empty()) return;
  pre_tokenizer_.split(text, state.buffer);
  for (const std::string_view piece : state.buffer.pieces) {
    // Pieces view into the caller's text or the buffer's arena: both outlive the call.
    const bool cacheable = piece.size() >= 2 && piece.size() <= kMaxCachedPieceBytes;
    if (cacheable) {
      const auto it = state.seen.find(piece);
      if (it != state.seen.end()) {
        const auto [offset, count] = it->second;
        for (uint32_t i = 0; i < count; ++i)
          ids.push_back(ids[offset + i]);
        continue;
      }
    }
    const size_t before = ids.size();
    model_.encode(piece, ids, state.scratch);
    if (cacheable) {
      state.seen.emplace(piece, std::pair{static_cast<uint32_t>(before),
                                          static_cast<uint32_t>(ids.size() - before)});
    }
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
  std::string repaired;
  if (!utf8::is_valid(text)) {
    repaired = utf8::to_valid(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  EncodeState state;
  // Normalized text lives here until the call ends (the piece cache points into it).
  std::deque<std::string> normalized;
  const auto normalize = [&](std::string_view raw) -> std::string_view {
    if (normalizer_.is_identity()) return raw;
    return normalized.emplace_back(normalizer_.apply(raw));
  };
  if (!allow_special || added_.empty()) {
    encode_text(normalize(text), ids, state);
    return ids;
  }
  // Tokens marked normalized=false match the raw text; the others the normalized remainder.
  std::vector<Segment> raw_segments;
  added_.split(text, /*normalized_tokens=*/false, raw_segments);
  std::vector<Segment> segments;
  for (const Segment& raw : raw_segments) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    segments.clear();
    added_.split(normalize(raw.text), /*normalized_tokens=*/true, segments);
    for (const Segment& segment : segments) {
      if (segment.id >= 0) {
        ids.push_back(segment.id);
      } else {
        encode_text(segment.text, ids, state);
      }
    }
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (const int32_t id : ids) {
    const std::string* token = token_bytes(id);
    // Ids without a token are skipped, as tokenizers does.
    if (token == nullptr || (skip_special && is_special(id))) continue;
    bytes.append(*token);
  }
  if (utf8::is_valid(bytes)) return bytes;
  return utf8::to_valid(bytes);
}

}  // namespace longctx::text

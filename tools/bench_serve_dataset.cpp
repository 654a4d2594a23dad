#include "bench_serve_dataset.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "longctx/error.h"
#include "text/tokenizer.h"

namespace longctx::cli {
namespace {

// Without a tokenizer, completions prompts draw from these ids: past the special and control
// tokens that some vocabularies put first, and inside every vocabulary of 1000 tokens or more.
constexpr int32_t kDefaultFirstId = 100;
constexpr int32_t kDefaultEndId = 1000;

// Common English words: most are one token in any large BPE vocabulary, so a chat prompt of N
// words is close to N tokens even when no tokenizer is given.
constexpr const char* kWords[] = {
    "the",    "of",     "and",    "to",     "in",     "is",     "that",    "for",     "it",
    "as",     "was",    "with",   "be",     "by",     "on",     "not",     "he",      "this",
    "are",    "or",     "his",    "from",   "at",     "which",  "but",     "have",    "an",
    "had",    "they",   "you",    "were",   "their",  "one",    "all",     "we",      "can",
    "her",    "has",    "there",  "been",   "if",     "more",   "when",    "will",    "would",
    "who",    "so",     "no",     "time",   "world",  "water",  "light",   "house",   "river",
    "city",   "music",  "paper",  "table",  "green",  "small",  "large",   "early",   "later",
    "north",  "south",  "east",   "west",   "story",  "night",  "morning", "market",  "garden",
    "school", "number", "system", "people", "money",  "power",  "field",   "history", "energy",
    "road",   "stone",  "window", "friend", "letter", "forest", "island",  "summer",  "winter",
    "simple", "strong", "quiet",  "bright", "open",   "close",  "build",   "carry",   "follow",
    "begin",  "answer", "change", "report", "travel", "return", "listen",  "measure", "count",
};

// One generator per purpose: stream 0 is the shared prefix, stream i + 1 is prompt i.
std::mt19937_64 generator(uint64_t seed, uint64_t stream) {
  std::seed_seq sequence{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                         static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  return std::mt19937_64(sequence);
}

}  // namespace

BenchPromptSet::BenchPromptSet(const BenchServeOptions& options, const text::Tokenizer* tokenizer)
    : options_(options) {
  if (options.api == ServeApi::kCompletions) {
    int32_t first = kDefaultFirstId;
    int32_t end = kDefaultEndId;
    if (tokenizer) {
      for (int32_t id = 0; id < static_cast<int32_t>(tokenizer->vocab_size()); ++id) {
        if (tokenizer->token_bytes(id) && !tokenizer->is_special(id)) ordinary_ids_.push_back(id);
      }
      if (ordinary_ids_.empty()) fail("the tokenizer has no ordinary (non-special) token");
      vocabulary_ = str_cat(ordinary_ids_.size(), " ordinary ids of the tokenizer");
    } else {
      if (options.vocab_size) {
        end = static_cast<int32_t>(std::min<int64_t>(*options.vocab_size, INT32_MAX));
        first = std::min(kDefaultFirstId, end / 2);
      }
      for (int32_t id = first; id < end; ++id)
        ordinary_ids_.push_back(id);
      vocabulary_ = str_cat("ids in [", first, ", ", end, ")");
    }
  } else {
    for (const char* word : kWords) {
      const std::string text = std::string(" ") + word;
      const int64_t tokens =
          tokenizer ? std::max<int64_t>(1, static_cast<int64_t>(tokenizer->encode(text).size()))
                    : 1;
      words_.push_back({text, tokens});
    }
    vocabulary_ =
        tokenizer ? "random words, sized with the tokenizer" : "random words, about one token each";
  }
  std::mt19937_64 rng = generator(options.seed, 0);
  if (options.api == ServeApi::kCompletions) {
    append_random_tokens(prefix_.token_ids, options.prefix_len, rng);
    prefix_.input_len = options.prefix_len;
  } else {
    prefix_.input_len = append_random_words(prefix_.text, options.prefix_len, rng);
  }
}

int64_t BenchPromptSet::vary(int64_t len, std::mt19937_64& rng) const {
  if (options_.range_ratio == 0) return len;
  const auto low =
      static_cast<int64_t>(std::floor(static_cast<double>(len) * (1 - options_.range_ratio)));
  const auto high =
      static_cast<int64_t>(std::ceil(static_cast<double>(len) * (1 + options_.range_ratio)));
  return std::max<int64_t>(1, std::uniform_int_distribution<int64_t>(low, high)(rng));
}

void BenchPromptSet::append_random_tokens(std::vector<int32_t>& ids, int64_t count,
                                          std::mt19937_64& rng) const {
  std::uniform_int_distribution<size_t> pick(0, ordinary_ids_.size() - 1);
  ids.reserve(ids.size() + static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i)
    ids.push_back(ordinary_ids_[pick(rng)]);
}

int64_t BenchPromptSet::append_random_words(std::string& text, int64_t tokens,
                                            std::mt19937_64& rng) const {
  std::uniform_int_distribution<size_t> pick(0, words_.size() - 1);
  int64_t appended = 0;
  while (appended < tokens) {
    const Word& word = words_[pick(rng)];
    // The message's first word goes without its space.
    text += text.empty() ? word.text.substr(1) : word.text;
    appended += word.tokens;
  }
  return appended;
}

BenchPrompt BenchPromptSet::prompt(int64_t index) const {
  std::mt19937_64 rng = generator(options_.seed, static_cast<uint64_t>(index) + 1);
  BenchPrompt prompt = prefix_;
  const int64_t own_len = vary(options_.input_len, rng);
  prompt.output_len = vary(options_.output_len, rng);
  if (options_.api == ServeApi::kCompletions) {
    append_random_tokens(prompt.token_ids, own_len, rng);
    prompt.input_len += own_len;
  } else {
    prompt.input_len += append_random_words(prompt.text, own_len, rng);
  }
  return prompt;
}

BenchPrompt BenchPromptSet::probe(int64_t output_len) const {
  constexpr int64_t kProbeInputLen = 8;
  std::mt19937_64 rng = generator(options_.seed, UINT64_MAX);
  BenchPrompt prompt;
  prompt.output_len = output_len;
  if (options_.api == ServeApi::kCompletions) {
    append_random_tokens(prompt.token_ids, kProbeInputLen, rng);
    prompt.input_len = kProbeInputLen;
  } else {
    prompt.input_len = append_random_words(prompt.text, kProbeInputLen, rng);
  }
  return prompt;
}

std::string BenchPromptSet::describe_vocabulary() const {
  return vocabulary_;
}

}  // namespace longctx::cli

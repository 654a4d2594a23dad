// The prompts of `longctx bench serve`: random token ids (completions: the input length is
// exact on any server) or random English words (chat), with a prefix shared by all of them.
// Prompt i depends only on (seed, i), so prompts are made on the worker that sends them, in
// any order, without holding num_prompts of them in memory.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bench_serve_options.h"

namespace longctx::text {
class Tokenizer;
}

namespace longctx::cli {

struct BenchPrompt {
  std::vector<int32_t> token_ids;  // completions
  std::string text;                // chat: the user message
  int64_t input_len = 0;           // tokens meant: exact for ids, an estimate for text
  int64_t output_len = 0;          // max_tokens
};

class BenchPromptSet {
 public:
  // `tokenizer` may be null; when given it must outlive the set.
  BenchPromptSet(const BenchServeOptions& options, const text::Tokenizer* tokenizer);

  BenchPrompt prompt(int64_t index) const;  // safe from many threads at once
  // A short prompt unlike any of the benchmark's (no shared prefix either), for checking
  // that the server answers before the run.
  BenchPrompt probe(int64_t output_len) const;
  // Where ids come from, for the run's header line ("ids in [100, 1000)").
  std::string describe_vocabulary() const;

 private:
  struct Word {
    std::string text;  // with its leading space
    int64_t tokens;    // how many tokens it encodes to (1 without a tokenizer)
  };

  // Uniform in [len * (1 - ratio), len * (1 + ratio)], at least 1.
  int64_t vary(int64_t len, std::mt19937_64& rng) const;
  void append_random_tokens(std::vector<int32_t>& ids, int64_t count, std::mt19937_64& rng) const;
  // Appends random words worth at least `tokens` tokens; returns the tokens appended.
  int64_t append_random_words(std::string& text, int64_t tokens, std::mt19937_64& rng) const;

  const BenchServeOptions& options_;
  std::vector<int32_t> ordinary_ids_;  // completions: the ids prompts draw from
  std::string vocabulary_;
  std::vector<Word> words_;  // chat
  BenchPrompt prefix_;       // shared by every prompt
};

}  // namespace longctx::cli

// The longctx engine: continuous batching of generation requests over one model.
//
// Requests are submitted from any thread and get a RequestHandle that yields events: token
// deltas (with text when the engine has a tokenizer), then exactly one final event carrying
// the finish reason and the usage. A single engine thread runs the loop: the scheduler picks
// running decodes first, then chunks of waiting prefills up to a token budget; the model runner
// feeds the batch to the backend; the sampler turns logits into tokens; the streams get the
// deltas. When the KV cache runs out, the newest sequences are preempted and later recomputed,
// which gives identical output.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "longctx/error.h"

namespace longctx {

class LoadedModel;
namespace text {
class Tokenizer;
}

// Thrown by Engine::submit when the waiting queue is full (the server answers 429/503).
class QueueFullError : public Error {
 public:
  using Error::Error;
};

struct SamplingParams {
  double temperature = 1.0;  // 0: greedy
  double top_p = 1.0;        // (0, 1]
  int64_t top_k = -1;        // -1 or 0: off
  double min_p = 0.0;        // [0, 1]
  double repetition_penalty = 1.0;  // > 0; over prompt and output tokens
  double presence_penalty = 0.0;    // [-2, 2]; over output tokens
  double frequency_penalty = 0.0;   // [-2, 2]; over output tokens
  std::optional<uint64_t> seed;     // per request; same seed, same output, whatever the batch
  int64_t max_tokens = 16;          // >= 1
  int64_t min_tokens = 0;           // stop conditions are ignored before this many tokens
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;    // stop strings; the stop text never reaches the output
  bool ignore_eos = false;
  bool skip_special_tokens = true;  // in the output text
  int64_t logprobs = -1;            // -1: none; 0..20: the chosen token's and this many top ones
  int64_t n = 1;                    // sequences per request, sharing the prompt's KV

  // Throws Error naming the first invalid field. max_model_len bounds prompt + max_tokens.
  void validate(int64_t prompt_tokens, int64_t max_model_len, int64_t vocab_size) const;
};

struct GenerationRequest {
  std::string id;                 // unique among live requests; generated when empty
  std::vector<int32_t> prompt;    // token ids
  SamplingParams sampling;
};

enum class FinishReason { kStop, kLength, kAbort, kError };
const char* to_string(FinishReason reason);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // most likely first
};

struct SequenceDelta {
  int64_t index = 0;                  // which of the request's n sequences
  std::vector<int32_t> tokens;        // new output tokens
  std::string text;                   // their text (empty without a tokenizer)
  std::vector<TokenLogprob> logprobs;  // one per new token when requested
  std::optional<FinishReason> finish;  // set on the sequence's last delta
  std::string stop_reason;            // the stop string or token id that ended it
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // over all n sequences
  int64_t cached_tokens = 0;      // prompt tokens served from the prefix cache
};

struct RequestEvent {
  std::vector<SequenceDelta> deltas;
  bool final = false;  // the last event of the request
  std::string error;   // why the request failed (final events only)
  Usage usage;         // meaningful on the final event
};

// The consumer side of one request. Thread-safe.
class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  virtual const std::string& id() const = 0;
  // Waits up to `timeout` for the next event; false on timeout. After the final event, returns
  // false at once.
  virtual bool next(RequestEvent* event, std::chrono::milliseconds timeout) = 0;
  // Asks the engine to abort the request; a final event with kAbort follows.
  virtual void abort() = 0;
};

struct EngineOptions {
  std::string device = "cpu";
  std::string kv_cache_dtype = "auto";   // auto | fp32 | bf16 | fp8
  std::string indexer_dtype = "auto";    // auto | fp32 | bf16 | fp4
  int64_t max_model_len = 0;             // 0: the model's max_position_embeddings
  int64_t max_num_seqs = 16;             // running sequences per step
  int64_t max_num_batched_tokens = 2048; // tokens per step (decodes + prefill chunks)
  // Requests admitted beyond a full batch: submit() throws QueueFullError once
  // max_num_seqs + max_waiting_requests requests are unfinished.
  int64_t max_waiting_requests = 256;
  double kv_cache_memory_gib = 1.0;      // memory for the KV pages
  bool enable_prefix_caching = true;
  bool enable_chunked_prefill = true;
  bool batch_invariant = false;          // results independent of batch composition
  // Sample where the logits are when the backend can (the CUDA backend): the same tokens as the
  // host sampler, without downloading the logits.
  bool sample_on_device = true;
  uint64_t seed = 0;                     // seeds requests that bring none
  // MTP speculative decoding: draft tokens per step from the model's MTP block (0 = off; 1
  // with the released models). A draft is kept only when the target model samples the same
  // token, so the output equals plain decoding.
  int64_t num_speculative_tokens = 0;
};

// Counters and histograms exported by the server's /metrics.
struct Histogram {
  std::vector<double> bounds;          // upper bounds of the buckets (the last one is +inf)
  std::vector<uint64_t> counts;        // cumulative counts per bucket
  double sum = 0;
  uint64_t count = 0;
};

struct EngineMetrics {
  int64_t requests_running = 0;
  int64_t requests_waiting = 0;
  int64_t requests_preempted_total = 0;
  double kv_cache_usage = 0;            // fraction of KV pages held by live sequences
  int64_t prefix_cache_queries = 0;     // prompt tokens looked up
  int64_t prefix_cache_hits = 0;        // of those, served from the cache
  int64_t prompt_tokens_total = 0;
  int64_t generation_tokens_total = 0;
  int64_t spec_decode_draft_tokens_total = 0;     // MTP drafts verified
  int64_t spec_decode_accepted_tokens_total = 0;  // of those, kept
  std::map<std::string, int64_t> requests_finished_total;  // by finish reason
  Histogram time_to_first_token_seconds;
  Histogram time_per_output_token_seconds;
  Histogram e2e_request_latency_seconds;
  Histogram queue_time_seconds;
};

class Engine {
 public:
  // Starts the engine thread. `tokenizer` may be null (token ids only: no text, no stop
  // strings).
  static std::unique_ptr<Engine> create(std::shared_ptr<const LoadedModel> model,
                                        std::shared_ptr<const text::Tokenizer> tokenizer,
                                        const EngineOptions& options);
  virtual ~Engine() = default;

  // Validates and enqueues; throws Error for invalid requests, QueueFullError when full.
  virtual std::shared_ptr<RequestHandle> submit(GenerationRequest request) = 0;
  virtual void abort(const std::string& request_id) = 0;
  virtual EngineMetrics metrics() const = 0;
  virtual int64_t max_model_len() const = 0;
  virtual const EngineOptions& options() const = 0;
  // Stops accepting requests; finishes in-flight ones (drain) or aborts them, then joins the
  // engine thread. Called by the destructor with drain = false.
  virtual void shutdown(bool drain) = 0;
  // The KV pages held by live sequences (0 when idle): for leak checks.
  virtual int64_t kv_pages_in_use() const = 0;
};

}  // namespace longctx

// The engine loop: submissions and aborts arrive through an inbox from any thread; one engine
// thread schedules, runs the backend, samples, and pushes events into the requests' streams.
#include "longctx/engine.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <set>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "engine/metrics.h"
#include "engine/model_session.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/stop_checker.h"
#include "model/model_weights.h"
#include "text/tokenizer.h"

namespace longctx {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

class Inbox;

// The event queue of one request, shared by the engine thread and the consumer.
class RequestStream : public RequestHandle {
 public:
  RequestStream(std::string id, std::weak_ptr<Inbox> inbox) : id_(std::move(id)), inbox_(std::move(inbox)) {}

  const std::string& id() const override { return id_; }

  bool next(RequestEvent* event, std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty() || delivered_final_; })) return false;
    if (events_.empty()) return false;
    *event = std::move(events_.front());
    events_.pop_front();
    if (event->final) delivered_final_ = true;
    return true;
  }

  void abort() override;

  void push(RequestEvent event) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events_.push_back(std::move(event));
    }
    ready_.notify_all();
  }

 private:
  std::string id_;
  std::weak_ptr<Inbox> inbox_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<RequestEvent> events_;
  bool delivered_final_ = false;
};

// What other threads hand to the engine thread.
class Inbox {
 public:
  struct Submission {
    GenerationRequest request;
    std::shared_ptr<RequestStream> stream;
    Clock::time_point arrival;
  };

  void submit(Submission submission) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      submissions.push_back(std::move(submission));
    }
    wake.notify_all();
  }
  void abort(const std::string& id) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      aborts.push_back(id);
    }
    wake.notify_all();
  }

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Submission> submissions;
  std::vector<std::string> aborts;
  bool stopping = false;
  bool drain = false;
};

void RequestStream::abort() {
  if (auto inbox = inbox_.lock()) inbox->abort(id_);
}

struct Request;

struct Sequence {
  ScheduledSequence scheduled;
  Request* request = nullptr;
  int64_t index = 0;
  PenaltyState penalties;
  std::unique_ptr<text::StreamingDetokenizer> detokenizer;
  std::unique_ptr<StopStringChecker> stops;
  int64_t generated = 0;
  bool finished = false;
  std::optional<int32_t> draft;  // the MTP block's guess of the next token, at the end of tokens
  TokenLogprob pending_logprob;
};

struct Request {
  std::string id;
  SamplingParams params;
  uint64_t seed = 0;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = -1;  // recorded when the first sequence is admitted
  std::vector<std::unique_ptr<Sequence>> sequences;
  std::shared_ptr<RequestStream> stream;
  Clock::time_point arrival;
  std::optional<Clock::time_point> first_scheduled, first_token;
  int64_t finished = 0;
  bool final_sent = false;
  RequestEvent pending;  // deltas of the current step
};

class EngineImpl : public Engine {
 public:
  EngineImpl(std::shared_ptr<const LoadedModel> model, std::shared_ptr<const text::Tokenizer> tokenizer,
             const EngineOptions& options)
      : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(options),
        inbox_(std::make_shared<Inbox>()) {
    const ModelConfig& config = model_->config();
    SessionOptions session;
    session.device = options.device;
    const std::string default_kv = options.device == "cpu" ? "fp32" : "bf16";
    session.kv.kv_dtype = parse_kv_dtype(options.kv_cache_dtype == "auto" ? default_kv : options.kv_cache_dtype);
    session.kv.indexer_dtype =
        parse_indexer_key_dtype(options.indexer_dtype == "auto" ? default_kv : options.indexer_dtype);
    if (!(options.kv_cache_memory_gib > 0)) fail("kv cache memory must be positive");
    session.kv_cache_bytes = static_cast<size_t>(options.kv_cache_memory_gib * 1024.0 * 1024.0 * 1024.0);
    session.max_sequences = options.max_num_seqs;
    session.max_batched_tokens = options.max_num_batched_tokens;
    session.enable_prefix_caching = options.enable_prefix_caching;
    session.batch_invariant = options.batch_invariant;
    session_ = std::make_unique<ModelSession>(model_, session);

    // The longest sequence the KV pools can hold alone.
    const KvPoolSizes& sizes = session_->kv().sizes();
    int64_t blocks = sizes.compressed_pages.empty() ? INT64_MAX / kKvBlockSize
                                                    : *std::min_element(sizes.compressed_pages.begin(), sizes.compressed_pages.end());
    const int64_t kv_limit = blocks * kKvBlockSize;
    max_model_len_ = options.max_model_len > 0 ? options.max_model_len : std::min(config.max_position_embeddings, kv_limit);
    if (max_model_len_ > config.max_position_embeddings) {
      fail("max_model_len ", max_model_len_, " exceeds the model's max_position_embeddings ",
           config.max_position_embeddings);
    }
    if (max_model_len_ > kv_limit) {
      fail("max_model_len ", max_model_len_, " needs more KV than ", options.kv_cache_memory_gib,
           " GiB hold (", kv_limit, " tokens); raise the KV cache memory or lower max_model_len");
    }
    if (options.num_speculative_tokens < 0 || options.num_speculative_tokens > 1) {
      fail("num_speculative_tokens must be 0 or 1 (one MTP draft per step), got ", options.num_speculative_tokens);
    }
    if (options.num_speculative_tokens > 0) {
      if (config.num_nextn_predict_layers < 1) fail("speculative decoding needs a model with an MTP block");
      if (!session_->backend().supports_state_snapshots()) {
        fail("the ", session_->backend().name(), " backend does not support speculative decoding yet");
      }
    }
    SchedulerOptions scheduler;
    scheduler.max_num_seqs = options.max_num_seqs;
    scheduler.max_num_batched_tokens = options.max_num_batched_tokens;
    scheduler.enable_chunked_prefill = options.enable_chunked_prefill;
    scheduler_ = std::make_unique<Scheduler>(session_->kv(), scheduler);
    device_sampling_ = options.sample_on_device && session_->backend().supports_sampling();
    if (device_sampling_) session_->backend().keep_logits_on_device(true);
    thread_ = std::thread([this] { loop(); });
  }

  ~EngineImpl() override { shutdown(false); }

  std::shared_ptr<RequestHandle> submit(GenerationRequest request) override {
    const ModelConfig& config = model_->config();
    request.sampling.validate(static_cast<int64_t>(request.prompt.size()), max_model_len_, config.vocab_size);
    for (const int32_t token : request.prompt) {
      if (token < 0 || token >= config.vocab_size) {
        fail("prompt token id ", token, " is outside the vocabulary [0, ", config.vocab_size, ")");
      }
    }
    if (!request.sampling.stop.empty() && !tokenizer_) fail("stop strings need a model with a tokenizer");
    std::lock_guard<std::mutex> lock(inbox_->mutex);
    if (inbox_->stopping) fail("the engine is shutting down");
    // The bound counts every unfinished request, so a request still fits while the batch has
    // room even with max_waiting_requests 0.
    const int64_t capacity = options_.max_num_seqs + options_.max_waiting_requests;
    if (static_cast<int64_t>(live_ids_.size()) >= capacity) {
      throw QueueFullError(str_cat("the batch and the waiting queue are full (", options_.max_num_seqs, " running + ",
                                   options_.max_waiting_requests, " waiting requests)"));
    }
    if (request.id.empty()) request.id = str_cat("req-", next_request_number_++);
    if (!live_ids_.insert(request.id).second) fail("a request with id '", request.id, "' is already running");
    auto stream = std::make_shared<RequestStream>(request.id, inbox_);
    ++waiting_requests_;
    inbox_->submissions.push_back({std::move(request), stream, Clock::now()});
    inbox_->wake.notify_all();
    return stream;
  }

  void abort(const std::string& request_id) override { inbox_->abort(request_id); }
  EngineMetrics metrics() const override { return metrics_.snapshot(); }
  int64_t max_model_len() const override { return max_model_len_; }
  const EngineOptions& options() const override { return options_; }
  int64_t kv_pages_in_use() const override { return pages_in_use_.load(); }

  void shutdown(bool drain) override {
    {
      std::lock_guard<std::mutex> lock(inbox_->mutex);
      if (!inbox_->stopping) {
        inbox_->stopping = true;
        inbox_->drain = drain;
      }
    }
    inbox_->wake.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void loop() {
    while (true) {
      std::deque<Inbox::Submission> submissions;
      std::vector<std::string> aborts;
      bool stopping = false;
      bool drain = false;
      {
        std::unique_lock<std::mutex> lock(inbox_->mutex);
        inbox_->wake.wait(lock, [&] {
          return inbox_->stopping || !inbox_->submissions.empty() || !inbox_->aborts.empty() || has_runnable_work();
        });
        submissions.swap(inbox_->submissions);
        aborts.swap(inbox_->aborts);
        stopping = inbox_->stopping;
        drain = inbox_->drain;
      }
      for (auto& submission : submissions) admit(std::move(submission));
      for (const std::string& id : aborts) abort_request(id, FinishReason::kAbort, "");
      if (stopping && !drain) {
        while (!requests_.empty()) abort_request(requests_.begin()->first, FinishReason::kAbort, "");
      }
      if (stopping && requests_.empty()) break;
      try {
        step();
      } catch (const std::exception& error) {
        // A failure outside one request's input: fail everything in flight, keep serving.
        log::error("engine step failed: ", error.what());
        while (!requests_.empty()) abort_request(requests_.begin()->first, FinishReason::kError, error.what());
      }
      publish_gauges();
    }
    publish_gauges();
  }

  bool has_runnable_work() const {
    for (const auto& [id, request] : requests_) {
      for (const auto& sequence : request->sequences) {
        if (!sequence->finished && !sequence->scheduled.held) return true;
      }
    }
    return false;
  }

  void admit(Inbox::Submission submission) {
    auto request = std::make_unique<Request>();
    request->id = submission.request.id;
    request->params = submission.request.sampling;
    request->seed = request->params.seed.value_or(options_.seed ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(++admitted_)));
    request->prompt_tokens = static_cast<int64_t>(submission.request.prompt.size());
    request->stream = std::move(submission.stream);
    request->arrival = submission.arrival;
    for (int64_t i = 0; i < request->params.n; ++i) {
      auto sequence = std::make_unique<Sequence>();
      sequence->request = request.get();
      sequence->index = i;
      sequence->scheduled.tokens = submission.request.prompt;
      sequence->scheduled.arrival = next_arrival_++;
      sequence->scheduled.owner = sequence.get();
      // Siblings wait for the first sequence's prompt so they can share its cached blocks.
      sequence->scheduled.held = i > 0 && options_.enable_prefix_caching;
      sequence->penalties.init(submission.request.prompt, model_->config().vocab_size, request->params);
      if (tokenizer_) {
        sequence->detokenizer = std::make_unique<text::StreamingDetokenizer>(*tokenizer_, request->params.skip_special_tokens);
      }
      sequence->stops = std::make_unique<StopStringChecker>(request->params.stop);
      scheduler_->add(&sequence->scheduled);
      request->sequences.push_back(std::move(sequence));
    }
    metrics_.update([&](EngineMetrics& m) { m.prompt_tokens_total += request->prompt_tokens * request->params.n; });
    const std::string id = request->id;
    requests_.emplace(id, std::move(request));
  }

  void step() {
    if (scheduler_->idle()) return;
    SchedulerStep step = scheduler_->schedule();
    for (ScheduledSequence* scheduled : step.unschedulable) {
      Sequence* sequence = owner(scheduled);
      abort_request(sequence->request->id, FinishReason::kError,
                    str_cat("the request needs more KV cache than the engine has (",
                            scheduled->tokens.size(), " tokens)"));
    }
    for (ScheduledSequence* scheduled : step.preempted) drop_draft(owner(scheduled));
    if (!step.preempted.empty()) {
      metrics_.update([&](EngineMetrics& m) { m.requests_preempted_total += static_cast<int64_t>(step.preempted.size()); });
    }
    if (step.chunks.empty()) return;

    // With MTP drafting, every computed position also feeds the MTP block, which needs the
    // main model's hidden streams of all of them.
    const bool drafting = options_.num_speculative_tokens > 0;
    const size_t snapshot_floats = session_->backend().state_snapshot_floats();
    ForwardBatch batch;
    batch.return_hidden = drafting;
    std::vector<std::vector<float>> snapshots(step.chunks.size());
    const Clock::time_point now = Clock::now();
    for (size_t i = 0; i < step.chunks.size(); ++i) {
      const ScheduledChunk& chunk = step.chunks[i];
      Sequence* sequence = owner(chunk.sequence);
      Request* request = sequence->request;
      if (!request->first_scheduled) {
        request->first_scheduled = now;
        --waiting_requests_;
        metrics_.update([&](EngineMetrics& m) { observe(m.queue_time_seconds, seconds_between(request->arrival, now)); });
      }
      if (request->cached_tokens < 0 && sequence->index == 0) request->cached_tokens = chunk.sequence->cached_tokens;
      SequenceChunk forward{std::span<const int32_t>(chunk.sequence->tokens.data() + chunk.start, static_cast<size_t>(chunk.count)),
                            chunk.start, &session_->kv().tables(chunk.sequence->kv), chunk.samples ? 1 : 0};
      if (drafting) forward.num_logits = chunk.count;
      if (sequence->draft && chunk.samples) {
        snapshots[i].resize(static_cast<size_t>(chunk.count) * snapshot_floats);
        forward.state_snapshots = snapshots[i].data();
      }
      batch.chunks.push_back(forward);
    }
    ForwardOutput output;
    try {
      session_->backend().forward(batch, &output);
    } catch (const Error& error) {
      for (const ScheduledChunk& chunk : step.chunks) {
        abort_request(owner(chunk.sequence)->request->id, FinishReason::kError, error.what());
      }
      return;
    }

    // 1. Sample; a draft stands if the sampled token equals it, else the sequence rolls back
    //    to the position before it. Either way the tokens are those plain decoding would give.
    //    On the device, every draw the step may need is made at once: after a draft, the draw
    //    after it assumes the draft was taken (it is used only then).
    const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
    DeviceDraws draws;
    std::vector<size_t> first_draw(step.chunks.size());
    if (device_sampling_) {
      int64_t first_row = 0;
      for (size_t i = 0; i < step.chunks.size(); ++i) {
        const ScheduledChunk& chunk = step.chunks[i];
        Sequence* sequence = owner(chunk.sequence);
        const int64_t rows = batch.chunks[i].num_logits;
        first_draw[i] = draws.rows.size();
        if (chunk.samples) {
          const int64_t last_row = first_row + rows - 1;
          if (sequence->draft) {
            draws.add(sampling_row(sequence, last_row - 1, {}));
            draws.add(sampling_row(sequence, last_row, sequence->draft));
          } else {
            draws.add(sampling_row(sequence, last_row, {}));
          }
        }
        first_row += rows;
      }
      session_->backend().sample(draws.rows, &draws.output);
    }
    std::vector<int64_t> accepted(step.chunks.size());
    int64_t first_row = 0;
    for (size_t i = 0; i < step.chunks.size(); ++i) {
      const ScheduledChunk& chunk = step.chunks[i];
      Sequence* sequence = owner(chunk.sequence);
      const int64_t rows = batch.chunks[i].num_logits;
      accepted[i] = chunk.count;
      if (chunk.samples) {
        const int64_t last = chunk.start + chunk.count - 1;
        // The token after `position` (`draw` of the chunk's device draws).
        auto next = [&](int64_t position, size_t draw) {
          if (device_sampling_) return take_draw(sequence, draws, first_draw[i] + draw);
          const int64_t row = first_row + rows - (chunk.start + chunk.count - position);
          return sample_next(sequence, std::span<const float>(output.logits.data() + static_cast<size_t>(row) * vocab, vocab));
        };
        if (sequence->draft) {
          const int32_t draft = *sequence->draft;
          sequence->draft.reset();
          const int32_t first = next(last - 1, 0);
          metrics_.update([&](EngineMetrics& m) { ++m.spec_decode_draft_tokens_total; });
          if (first == draft) {
            metrics_.update([&](EngineMetrics& m) { ++m.spec_decode_accepted_tokens_total; });
            if (!take_token(sequence, first, /*already_in_tokens=*/true)) {
              take_token(sequence, next(last, 1), false);
            }
          } else {
            chunk.sequence->tokens.pop_back();
            session_->backend().restore_state(session_->kv().tables(chunk.sequence->kv), last - 1,
                                              snapshots[i].data() + static_cast<size_t>(chunk.count - 2) * snapshot_floats);
            accepted[i] = chunk.count - 1;
            take_token(sequence, first, false);
          }
        } else {
          take_token(sequence, next(last, 0), false);
        }
      }
      first_row += rows;
    }
    // 2. The MTP block drafts the next token of every sequence that keeps running.
    if (drafting) draft_next_tokens(step.chunks, accepted, output, batch);
    // 3. Commit the positions that stand.
    for (size_t i = 0; i < step.chunks.size(); ++i) {
      Sequence* sequence = owner(step.chunks[i].sequence);
      if (sequence->finished) continue;
      scheduler_->complete(step.chunks[i], accepted[i]);
      if (sequence->draft) sequence->scheduled.tokens.push_back(*sequence->draft);
    }
    flush_events();
  }

  // Runs the MTP block over every position computed this step (so its own KV stays complete)
  // and takes the greedy token at each sampling sequence's last position as its next draft.
  void draft_next_tokens(const std::vector<ScheduledChunk>& chunks, const std::vector<int64_t>& accepted,
                         const ForwardOutput& output, const ForwardBatch& batch) {
    const ModelConfig& config = model_->config();
    const size_t per_row = static_cast<size_t>(config.hc_mult * config.hidden_size);
    std::vector<MtpChunk> mtp;
    std::vector<Sequence*> drafting;
    int64_t first_row = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const ScheduledChunk& chunk = chunks[i];
      Sequence* sequence = owner(chunk.sequence);
      const int64_t rows = batch.chunks[i].num_logits;
      if (!sequence->finished) {
        const std::vector<int32_t>& tokens = chunk.sequence->tokens;
        const int64_t count = accepted[i];
        MtpChunk c;
        c.next_tokens = std::span<const int32_t>(tokens.data() + chunk.start + 1, static_cast<size_t>(count));
        c.hidden = std::span<const float>(output.hidden.data() + static_cast<size_t>(first_row) * per_row,
                                          static_cast<size_t>(count) * per_row);
        c.start_pos = chunk.start;
        c.blocks = &session_->kv().tables(chunk.sequence->kv);
        // A draft is worth making only if it can still be used.
        const bool wants_draft = chunk.samples && sequence->generated + 1 < sequence->request->params.max_tokens &&
                                 static_cast<int64_t>(tokens.size()) + 1 < max_model_len_;
        c.num_logits = wants_draft ? 1 : 0;
        mtp.push_back(c);
        if (wants_draft) drafting.push_back(sequence);
      }
      first_row += rows;
    }
    if (mtp.empty()) return;
    ForwardOutput drafts;
    session_->backend().forward_mtp(mtp, 0, &drafts);
    if (device_sampling_) {
      // Greedy on the device: the first maximal logit, as below.
      std::vector<SamplingRow> rows(drafting.size());
      for (size_t d = 0; d < drafting.size(); ++d) {
        rows[d].row = static_cast<int64_t>(d);
        rows[d].temperature = 0.0;
      }
      SampleOutput greedy;
      session_->backend().sample(rows, &greedy);
      for (size_t d = 0; d < drafting.size(); ++d) drafting[d]->draft = greedy.tokens[d];
      return;
    }
    const size_t vocab = static_cast<size_t>(config.vocab_size);
    for (size_t d = 0; d < drafting.size(); ++d) {
      const float* row = drafts.logits.data() + d * vocab;
      drafting[d]->draft = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    }
  }

  // A preempted sequence is recomputed from its tokens: an unverified draft must not be among them.
  void drop_draft(Sequence* sequence) {
    if (!sequence->draft) return;
    sequence->scheduled.tokens.pop_back();
    sequence->draft.reset();
  }

  // Ids with probability zero for the sequence's output token number `generated`.
  std::vector<int32_t> banned_ids(const Sequence* sequence, int64_t generated) const {
    const SamplingParams& params = sequence->request->params;
    std::vector<int32_t> banned;
    if (generated < params.min_tokens) {
      if (!params.ignore_eos) banned.push_back(static_cast<int32_t>(model_->config().eos_token_id));
      banned.insert(banned.end(), params.stop_token_ids.begin(), params.stop_token_ids.end());
    }
    return banned;
  }

  // Draws the sequence's next token from `logits`; its logprob waits for take_token.
  int32_t sample_next(Sequence* sequence, std::span<const float> logits) {
    const Request& request = *sequence->request;
    const SampleResult result = sample_token(logits, request.params, sequence->penalties, request.seed, sequence->index,
                                             sequence->generated, banned_ids(sequence, sequence->generated));
    sequence->pending_logprob = result.logprob;
    return result.token;
  }

  // One device draw and the lists its row points into.
  struct RowInputs {
    SamplingRow row;
    std::vector<PenaltyEntry> penalties;
    std::vector<int32_t> banned;
  };

  // The device draws of one step, with the penalty and banned lists their rows point into.
  struct DeviceDraws {
    std::vector<SamplingRow> rows;
    std::deque<std::vector<PenaltyEntry>> penalties;
    std::deque<std::vector<int32_t>> banned;
    SampleOutput output;

    void add(RowInputs in) {
      penalties.push_back(std::move(in.penalties));
      banned.push_back(std::move(in.banned));
      in.row.penalties = penalties.back();
      in.row.banned = banned.back();
      rows.push_back(in.row);
    }
  };

  // The device draw sample_next would make from logit row `row`; with `extra`, the draw after
  // that token was taken too.
  RowInputs sampling_row(const Sequence* sequence, int64_t row, std::optional<int32_t> extra) const {
    const Request& request = *sequence->request;
    const SamplingParams& params = request.params;
    const int64_t generated = sequence->generated + (extra ? 1 : 0);
    RowInputs in;
    in.penalties = sequence->penalties.entries(params, extra);
    in.banned = banned_ids(sequence, generated);
    SamplingRow& r = in.row;
    r.row = row;
    r.temperature = params.temperature;
    r.top_p = params.top_p;
    r.top_k = params.top_k;
    r.min_p = params.min_p;
    r.repetition_penalty = params.repetition_penalty;
    r.presence_penalty = params.presence_penalty;
    r.frequency_penalty = params.frequency_penalty;
    r.seed = request.seed;
    r.stream = sequence->index;
    r.position = generated;
    r.return_logits = params.logprobs >= 0;
    return in;
  }

  // Draw `index` of the step's device draws; its logprob waits for take_token.
  int32_t take_draw(Sequence* sequence, const DeviceDraws& draws, size_t index) {
    const int32_t token = draws.output.tokens[index];
    const SamplingParams& params = sequence->request->params;
    sequence->pending_logprob = TokenLogprob{};
    if (params.logprobs >= 0) {
      size_t slot = 0;  // rows with logits come back in draw order
      for (size_t k = 0; k < index; ++k) slot += draws.rows[k].return_logits ? 1 : 0;
      const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
      sequence->pending_logprob =
          token_logprob(std::span<const float>(draws.output.logits.data() + slot * vocab, vocab), token, params.logprobs);
    }
    return token;
  }

  // Appends a sampled token to the sequence's output (and tokens, unless it is the draft
  // already there), applies the stop rules and records the delta. True if the sequence ended.
  bool take_token(Sequence* sequence, int32_t token, bool already_in_tokens) {
    Request& request = *sequence->request;
    const SamplingParams& params = request.params;
    const int32_t eos = static_cast<int32_t>(model_->config().eos_token_id);
    if (!already_in_tokens) sequence->scheduled.tokens.push_back(token);
    sequence->penalties.add_output(token);
    ++sequence->generated;
    if (!request.first_token) {
      request.first_token = Clock::now();
      metrics_.update([&](EngineMetrics& m) {
        observe(m.time_to_first_token_seconds, seconds_between(request.arrival, *request.first_token));
      });
    }
    metrics_.update([&](EngineMetrics& m) { ++m.generation_tokens_total; });
    // Siblings may start once the first sequence has computed the prompt.
    if (sequence->index == 0) {
      for (auto& sibling : request.sequences) sibling->scheduled.held = false;
    }

    SequenceDelta delta;
    delta.index = sequence->index;
    delta.tokens.push_back(token);
    if (params.logprobs >= 0) delta.logprobs.push_back(sequence->pending_logprob);
    const bool may_stop = sequence->generated > params.min_tokens;
    const bool stop_token = may_stop && ((!params.ignore_eos && token == eos) ||
                                         std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(),
                                                   token) != params.stop_token_ids.end());
    bool stop_string = false;
    if (stop_token) {
      delta.stop_reason = std::to_string(token);  // its text is not part of the output
    } else if (sequence->detokenizer) {
      std::string stop;
      delta.text = sequence->stops->push(sequence->detokenizer->push(token), &stop);
      if (!stop.empty()) {
        stop_string = may_stop;
        if (may_stop) {
          delta.stop_reason = stop;
        } else {
          delta.text += stop;  // before min_tokens a stop string is ordinary text
        }
      }
    }
    std::optional<FinishReason> finish;
    if (stop_token || stop_string) {
      finish = FinishReason::kStop;
    } else if (sequence->generated >= params.max_tokens ||
               static_cast<int64_t>(sequence->scheduled.tokens.size()) >= max_model_len_) {
      finish = FinishReason::kLength;
    }
    // Whatever text is still held back belongs to the output, unless a stop string ended it.
    if (finish && !stop_string && sequence->detokenizer) {
      std::string ignored;
      delta.text += sequence->stops->push(sequence->detokenizer->flush(), &ignored);
      delta.text += sequence->stops->flush();
    }
    if (finish) {
      delta.finish = finish;
      finish_sequence(sequence);
    }
    request.pending.deltas.push_back(std::move(delta));
    return finish.has_value();
  }


  void finish_sequence(Sequence* sequence) {
    if (sequence->finished) return;
    sequence->finished = true;
    scheduler_->remove(&sequence->scheduled);
    ++sequence->request->finished;
  }

  // Sends the step's deltas, and the final event of requests whose sequences all finished.
  void flush_events() {
    pages_in_use_ = session_->kv().referenced_pages();  // before anyone sees a final event
    std::vector<std::string> done;
    for (auto& [id, request] : requests_) {
      const bool all_finished = request->finished == static_cast<int64_t>(request->sequences.size());
      if (request->pending.deltas.empty() && !all_finished) continue;
      RequestEvent event = std::move(request->pending);
      request->pending = RequestEvent{};
      if (all_finished) {
        event.final = true;
        event.usage = usage_of(*request);
        record_finish(*request, event);
        done.push_back(id);
      }
      request->stream->push(std::move(event));
    }
    for (const std::string& id : done) retire(id);
  }

  Usage usage_of(const Request& request) const {
    Usage usage;
    usage.prompt_tokens = request.prompt_tokens;
    for (const auto& sequence : request.sequences) usage.completion_tokens += sequence->generated;
    usage.cached_tokens = std::max<int64_t>(0, request.cached_tokens);
    return usage;
  }

  void record_finish(const Request& request, const RequestEvent& event) {
    const Clock::time_point now = Clock::now();
    std::string reason = "stop";
    for (const SequenceDelta& delta : event.deltas) {
      if (delta.finish) reason = to_string(*delta.finish);
    }
    if (!event.error.empty()) reason = "error";
    const int64_t tokens = event.usage.completion_tokens;
    metrics_.update([&](EngineMetrics& m) {
      ++m.requests_finished_total[reason];
      observe(m.e2e_request_latency_seconds, seconds_between(request.arrival, now));
      if (request.first_token && tokens > 1) {
        observe(m.time_per_output_token_seconds,
                seconds_between(*request.first_token, now) / static_cast<double>(tokens - 1));
      }
    });
  }

  void retire(const std::string& id) {
    const auto it = requests_.find(id);
    if (it == requests_.end()) return;
    if (!it->second->first_scheduled) --waiting_requests_;
    requests_.erase(it);
    std::lock_guard<std::mutex> lock(inbox_->mutex);
    live_ids_.erase(id);
  }

  // Ends a request now: its unfinished sequences stop with `reason`; the final event follows.
  void abort_request(const std::string& id, FinishReason reason, const std::string& error) {
    const auto it = requests_.find(id);
    if (it == requests_.end()) return;
    Request& request = *it->second;
    for (auto& sequence : request.sequences) {
      if (sequence->finished) continue;
      SequenceDelta delta;
      delta.index = sequence->index;
      delta.finish = reason;
      request.pending.deltas.push_back(std::move(delta));
      finish_sequence(sequence.get());
    }
    pages_in_use_ = session_->kv().referenced_pages();
    RequestEvent event = std::move(request.pending);
    event.final = true;
    event.error = error;
    event.usage = usage_of(request);
    record_finish(request, event);
    request.stream->push(std::move(event));
    retire(id);
  }

  static Sequence* owner(ScheduledSequence* scheduled) { return static_cast<Sequence*>(scheduled->owner); }

  void publish_gauges() {
    const KvCacheStats stats = session_->kv().stats();
    pages_in_use_ = session_->kv().referenced_pages();
    metrics_.update([&](EngineMetrics& m) {
      m.requests_running = static_cast<int64_t>(scheduler_->num_running());
      m.requests_waiting = waiting_requests_.load();
      m.kv_cache_usage = stats.usage();
      m.prefix_cache_queries = stats.prefix_queried_tokens;
      m.prefix_cache_hits = stats.prefix_hit_tokens;
    });
  }

  std::shared_ptr<const LoadedModel> model_;
  std::shared_ptr<const text::Tokenizer> tokenizer_;
  EngineOptions options_;
  std::shared_ptr<Inbox> inbox_;
  std::unique_ptr<ModelSession> session_;
  std::unique_ptr<Scheduler> scheduler_;
  int64_t max_model_len_ = 0;
  bool device_sampling_ = false;  // the backend samples; forwards return no logits
  std::map<std::string, std::unique_ptr<Request>> requests_;  // engine thread only
  std::set<std::string> live_ids_;                              // under inbox_->mutex
  std::atomic<int64_t> waiting_requests_{0};
  std::atomic<int64_t> pages_in_use_{0};
  uint64_t next_request_number_ = 1;
  int64_t next_arrival_ = 0;
  uint64_t admitted_ = 0;
  MetricsRecorder metrics_;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Engine> Engine::create(std::shared_ptr<const LoadedModel> model,
                                       std::shared_ptr<const text::Tokenizer> tokenizer,
                                       const EngineOptions& options) {
  return std::make_unique<EngineImpl>(std::move(model), std::move(tokenizer), options);
}

}  // namespace longctx

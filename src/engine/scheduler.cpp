#include "engine/scheduler.h"

#include <algorithm>

#include "longctx/error.h"

namespace longctx {

Scheduler::Scheduler(KvCacheManager& kv, const SchedulerOptions& options) : kv_(kv), options_(options) {
  if (options.max_num_seqs < 1) fail("max_num_seqs must be >= 1");
  if (options.max_num_batched_tokens < 1) fail("max_num_batched_tokens must be >= 1");
}

void Scheduler::insert_waiting(ScheduledSequence* sequence) {
  const auto at = std::upper_bound(waiting_.begin(), waiting_.end(), sequence,
                                   [](const ScheduledSequence* a, const ScheduledSequence* b) {
                                     return a->arrival < b->arrival;
                                   });
  waiting_.insert(at, sequence);
}

void Scheduler::add(ScheduledSequence* sequence) {
  sequence->running = false;
  insert_waiting(sequence);
}

void Scheduler::remove(ScheduledSequence* sequence) {
  running_.erase(std::remove(running_.begin(), running_.end(), sequence), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), sequence), waiting_.end());
  if (sequence->kv != 0) kv_.free_sequence(sequence->kv);
  sequence->kv = 0;
  sequence->running = false;
}

void Scheduler::preempt(ScheduledSequence* sequence, SchedulerStep& step) {
  running_.erase(std::remove(running_.begin(), running_.end(), sequence), running_.end());
  kv_.free_sequence(sequence->kv);
  sequence->kv = 0;
  sequence->computed = 0;
  sequence->running = false;
  ++sequence->preemptions;
  insert_waiting(sequence);
  step.preempted.push_back(sequence);
}

// Gets pages for positions [0, end) of a running sequence, preempting the newest other
// running sequences as needed. False if the sequence itself had to be preempted.
bool Scheduler::ensure_pages(ScheduledSequence* sequence, int64_t end, SchedulerStep& step) {
  while (!kv_.reserve(sequence->kv, end)) {
    ScheduledSequence* victim = running_.back();
    const bool scheduled_already = std::any_of(step.chunks.begin(), step.chunks.end(),
                                               [&](const ScheduledChunk& c) { return c.sequence == victim; });
    if (victim == sequence || scheduled_already) {
      preempt(sequence, step);
      return false;
    }
    preempt(victim, step);
  }
  return true;
}

SchedulerStep Scheduler::schedule() {
  SchedulerStep step;
  int64_t budget = options_.max_num_batched_tokens;

  // Running sequences, oldest first: they keep their place.
  const std::vector<ScheduledSequence*> running = running_;
  for (ScheduledSequence* sequence : running) {
    if (!sequence->running || budget <= 0) continue;
    int64_t count = std::min(sequence->remaining(), budget);
    if (!options_.enable_chunked_prefill && count < sequence->remaining()) continue;
    if (count <= 0) continue;
    if (!ensure_pages(sequence, sequence->computed + count, step)) continue;
    step.chunks.push_back({sequence, sequence->computed, count, count == sequence->remaining()});
    budget -= count;
  }

  // Waiting sequences, oldest first, unless someone was just preempted for lack of pages.
  while (step.preempted.empty() && !waiting_.empty() && budget > 0 &&
         static_cast<int64_t>(running_.size()) < options_.max_num_seqs) {
    ScheduledSequence* sequence = nullptr;
    for (ScheduledSequence* candidate : waiting_) {
      if (!candidate->held) {
        sequence = candidate;
        break;
      }
    }
    if (sequence == nullptr) break;
    if (sequence->kv == 0) {
      sequence->kv = kv_.add_sequence();
      sequence->cached_tokens = kv_.match_prefix(sequence->kv, sequence->tokens);
      sequence->computed = sequence->cached_tokens;
    }
    int64_t count = std::min(sequence->remaining(), budget);
    // Without chunked prefill a prompt goes in whole, alone if it exceeds the budget.
    if (!options_.enable_chunked_prefill && count < sequence->remaining()) {
      if (!step.chunks.empty()) break;
      count = sequence->remaining();
    }
    if (!kv_.reserve(sequence->kv, sequence->computed + count)) {
      if (running_.empty() && step.chunks.empty()) {
        // Nothing else holds pages: this sequence can never fit.
        waiting_.erase(std::find(waiting_.begin(), waiting_.end(), sequence));
        kv_.free_sequence(sequence->kv);
        sequence->kv = 0;
        step.unschedulable.push_back(sequence);
        continue;
      }
      break;
    }
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), sequence));
    sequence->running = true;
    running_.push_back(sequence);
    step.chunks.push_back({sequence, sequence->computed, count, count == sequence->remaining()});
    budget -= count;
  }
  return step;
}

void Scheduler::complete(const ScheduledChunk& chunk, int64_t count) {
  ScheduledSequence* sequence = chunk.sequence;
  if (count < 1 || count > chunk.count) fail("scheduler: completing ", count, " of ", chunk.count, " positions");
  kv_.commit(sequence->kv, std::span<const int32_t>(sequence->tokens.data() + chunk.start,
                                                    static_cast<size_t>(count)));
  sequence->computed = chunk.start + count;
}

}  // namespace longctx

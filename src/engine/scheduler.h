// The continuous-batching scheduler: a small pure object over the KV cache manager, testable
// without a model.
//
// Every step it takes the running sequences first (each decode needs one token; a sequence
// still prefilling gets the next chunk of its prompt), then admits waiting sequences in arrival
// order while the token budget, the sequence cap and the KV cache allow. When a running
// sequence cannot get KV pages, the newest running sequence is preempted: its pages are freed
// and it waits again, to be recomputed from its tokens later (same output, since the forward
// and the sampler are deterministic).
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "kv/kv_cache_manager.h"

namespace longctx {

struct SchedulerOptions {
  int64_t max_num_seqs = 16;
  int64_t max_num_batched_tokens = 2048;
  bool enable_chunked_prefill = true;
};

// What the scheduler knows of a sequence; the engine derives its own state from it.
struct ScheduledSequence {
  std::vector<int32_t> tokens;  // prompt, then sampled outputs
  int64_t arrival = 0;          // admission order; larger is newer
  int64_t computed = 0;         // positions whose KV exists
  int64_t cached_tokens = 0;    // positions taken from the prefix cache at admission
  KvCacheManager::SequenceId kv = 0;  // 0 while waiting
  bool held = false;            // not schedulable yet (a sibling still prefills the prompt)
  bool running = false;
  int64_t preemptions = 0;
  void* owner = nullptr;        // the engine's object for this sequence

  int64_t remaining() const { return static_cast<int64_t>(tokens.size()) - computed; }
};

struct ScheduledChunk {
  ScheduledSequence* sequence = nullptr;
  int64_t start = 0;   // first position of the chunk
  int64_t count = 0;
  bool samples = false;  // the chunk reaches the end of the tokens: sample the next one
};

struct SchedulerStep {
  std::vector<ScheduledChunk> chunks;
  std::vector<ScheduledSequence*> preempted;
  // Waiting sequences that cannot fit in the KV cache even when it is empty.
  std::vector<ScheduledSequence*> unschedulable;
};

class Scheduler {
 public:
  Scheduler(KvCacheManager& kv, const SchedulerOptions& options);

  void add(ScheduledSequence* sequence);     // to the waiting queue, in arrival order
  void remove(ScheduledSequence* sequence);  // finished or aborted: frees its KV
  SchedulerStep schedule();
  // Records that the first `count` positions of a scheduled chunk stand: commits their KV.
  void complete(const ScheduledChunk& chunk, int64_t count);
  void complete(const ScheduledChunk& chunk) { complete(chunk, chunk.count); }

  size_t num_running() const { return running_.size(); }
  size_t num_waiting() const { return waiting_.size(); }
  bool idle() const { return running_.empty() && waiting_.empty(); }

 private:
  bool ensure_pages(ScheduledSequence* sequence, int64_t end, SchedulerStep& step);
  void preempt(ScheduledSequence* sequence, SchedulerStep& step);
  void insert_waiting(ScheduledSequence* sequence);

  KvCacheManager& kv_;
  SchedulerOptions options_;
  std::vector<ScheduledSequence*> running_;  // oldest first
  std::deque<ScheduledSequence*> waiting_;   // oldest first
};

}  // namespace longctx

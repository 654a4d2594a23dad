#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <memory>

#include "model/test_model.h"

namespace longctx {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  void make(KvPoolSizes sizes, SchedulerOptions options) {
    kv_ = std::make_unique<KvCacheManager>(make_kv_layout(test_model_preset("tiny"), {}), sizes, false);
    scheduler_ = std::make_unique<Scheduler>(*kv_, options);
  }
  ScheduledSequence* sequence(int prompt_length) {
    auto s = std::make_unique<ScheduledSequence>();
    s->tokens.assign(static_cast<size_t>(prompt_length), 7);
    s->arrival = static_cast<int64_t>(sequences_.size());
    sequences_.push_back(std::move(s));
    scheduler_->add(sequences_.back().get());
    return sequences_.back().get();
  }
  // Runs a step as the engine would: completes every chunk and appends a token to those that sample.
  SchedulerStep step() {
    SchedulerStep s = scheduler_->schedule();
    for (const ScheduledChunk& chunk : s.chunks) {
      scheduler_->complete(chunk);
      if (chunk.samples) chunk.sequence->tokens.push_back(1);
    }
    return s;
  }

  std::unique_ptr<KvCacheManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::unique_ptr<ScheduledSequence>> sequences_;
};

TEST_F(SchedulerTest, ChunksLongPromptsWithinTheTokenBudget) {
  make({16, {16, 16}}, {4, 100, true});
  ScheduledSequence* a = sequence(250);
  SchedulerStep s = step();
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].count, 100);
  EXPECT_FALSE(s.chunks[0].samples);
  step();
  s = step();
  EXPECT_EQ(s.chunks[0].start, 200);
  EXPECT_EQ(s.chunks[0].count, 50);
  EXPECT_TRUE(s.chunks[0].samples);
  EXPECT_EQ(a->computed, 250);
  s = step();  // now a decode of the sampled token
  EXPECT_EQ(s.chunks[0].count, 1);
  EXPECT_EQ(s.chunks[0].start, 250);
}

TEST_F(SchedulerTest, DecodesComeFirstThenWaitingPrefillsUpToTheCaps) {
  make({32, {32, 32}}, {2, 64, true});
  ScheduledSequence* a = sequence(10);
  step();  // a prefilled
  ScheduledSequence* b = sequence(100);
  ScheduledSequence* c = sequence(5);
  SchedulerStep s = step();
  ASSERT_EQ(s.chunks.size(), 2u);
  EXPECT_EQ(s.chunks[0].sequence, a);  // the decode
  EXPECT_EQ(s.chunks[0].count, 1);
  EXPECT_EQ(s.chunks[1].sequence, b);  // a prefill chunk of the rest of the budget
  EXPECT_EQ(s.chunks[1].count, 63);
  // max_num_seqs = 2: c waits even though the budget has room after b finishes its prompt.
  s = step();
  EXPECT_EQ(s.chunks.size(), 2u);
  EXPECT_EQ(scheduler_->num_waiting(), 1u);
  EXPECT_FALSE(c->running);
  scheduler_->remove(a);
  s = step();
  EXPECT_TRUE(c->running);
}

TEST_F(SchedulerTest, WithoutChunkedPrefillPromptsGoInWhole) {
  make({32, {32, 32}}, {4, 64, false});
  ScheduledSequence* a = sequence(30);
  ScheduledSequence* b = sequence(50);
  SchedulerStep s = step();
  ASSERT_EQ(s.chunks.size(), 1u);  // b would not fit the rest of the budget
  EXPECT_EQ(s.chunks[0].sequence, a);
  s = step();
  EXPECT_EQ(s.chunks.size(), 2u);  // a's decode and b's whole prompt
  EXPECT_EQ(s.chunks[1].sequence, b);
  EXPECT_EQ(s.chunks[1].count, 50);
  // A prompt longer than the budget still runs, alone.
  ScheduledSequence* c = sequence(200);
  scheduler_->remove(a);
  scheduler_->remove(b);
  s = step();
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].sequence, c);
  EXPECT_EQ(s.chunks[0].count, 200);
}

TEST_F(SchedulerTest, PreemptsTheNewestWhenPagesRunOutAndResumesItLater) {
  // Two blocks per compressed pool: two sequences of up to 256 tokens, not three.
  make({16, {2, 2}}, {8, 1000, true});
  ScheduledSequence* a = sequence(250);
  ScheduledSequence* b = sequence(200);
  step();  // both admitted: 2 blocks used
  EXPECT_TRUE(a->running);
  EXPECT_TRUE(b->running);
  for (int i = 0; i < 7; ++i) step();  // the 8th step computes position 256 of a: a new block
  EXPECT_FALSE(b->running);
  EXPECT_EQ(b->preemptions, 1);
  EXPECT_EQ(b->computed, 0);
  EXPECT_EQ(b->tokens.size(), 207u);  // its outputs are kept for the recompute
  scheduler_->remove(a);
  SchedulerStep s = step();
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].sequence, b);
  EXPECT_EQ(s.chunks[0].count, 207);  // prompt and outputs recomputed in one go
  EXPECT_TRUE(s.chunks[0].samples);
}

TEST_F(SchedulerTest, ASequenceThatCanNeverFitIsReported) {
  make({4, {1, 1}}, {8, 1000, true});
  ScheduledSequence* big = sequence(600);
  SchedulerStep s = scheduler_->schedule();
  ASSERT_EQ(s.unschedulable.size(), 1u);
  EXPECT_EQ(s.unschedulable[0], big);
  EXPECT_TRUE(scheduler_->idle());
  EXPECT_EQ(kv_->referenced_pages(), 0);
}

}  // namespace
}  // namespace longctx

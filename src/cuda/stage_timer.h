// Where a forward step's GPU time goes, by stage (hc, projections, compressor, indexer, ...), for
// the benchmarks. The backend marks the start of each stage on its stream; the time between a
// mark and the next one is charged to the first mark's stage. Off by default: a disabled timer
// records nothing, and decode graphs are not captured while it is on (events cannot be read back
// from inside a graph).
#pragma once

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

namespace longctx::cuda {

class StageTimer {
 public:
  StageTimer() = default;
  ~StageTimer();
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;

  void enable(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }

  // Records the start of `stage` (a string literal) on `stream`.
  void mark(const char* stage, cudaStream_t stream);
  // Ends the step's last stage, waits for the stream and adds the step's times to the totals.
  void finish_step(cudaStream_t stream);

  struct Total {
    std::string stage;
    double milliseconds = 0;
    long calls = 0;
  };
  // Totals since the last reset, in the order stages were first seen.
  const std::vector<Total>& totals() const { return totals_; }
  void reset() { totals_.clear(); }

 private:
  cudaEvent_t event(size_t index);

  bool enabled_ = false;
  std::vector<cudaEvent_t> events_;
  std::vector<const char*> marked_;  // the stage of each recorded event of the current step
  std::vector<Total> totals_;
};

}  // namespace longctx::cuda

#include "cuda/stage_timer.h"

#include <cstring>

#include "cuda/cuda_check.h"

namespace longctx::cuda {

StageTimer::~StageTimer() {
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
}

cudaEvent_t StageTimer::event(size_t index) {
  while (events_.size() <= index) {
    cudaEvent_t e = nullptr;
    LONGCTX_CUDA_CHECK(cudaEventCreate(&e));
    events_.push_back(e);
  }
  return events_[index];
}

void StageTimer::mark(const char* stage, cudaStream_t stream) {
  if (!enabled_) return;
  LONGCTX_CUDA_CHECK(cudaEventRecord(event(marked_.size()), stream));
  marked_.push_back(stage);
}

void StageTimer::finish_step(cudaStream_t stream) {
  if (!enabled_ || marked_.empty()) {
    marked_.clear();
    return;
  }
  const size_t end = marked_.size();
  LONGCTX_CUDA_CHECK(cudaEventRecord(event(end), stream));
  LONGCTX_CUDA_CHECK(cudaEventSynchronize(event(end)));
  for (size_t i = 0; i < end; ++i) {
    float ms = 0;
    LONGCTX_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
    Total* total = nullptr;
    for (Total& t : totals_) {
      if (std::strcmp(t.stage.c_str(), marked_[i]) == 0) total = &t;
    }
    if (total == nullptr) {
      totals_.push_back({marked_[i], 0.0, 0});
      total = &totals_.back();
    }
    total->milliseconds += ms;
    ++total->calls;
  }
  marked_.clear();
}

}  // namespace longctx::cuda

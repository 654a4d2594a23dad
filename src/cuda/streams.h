// Streams and the events that order them, owned RAII-style, for the backend's overlapped work:
// a `Handoff` makes one stream wait, on the device, for everything enqueued so far on another.
// Handoffs recorded while a stream is being captured become edges of the captured graph, so the
// same code runs eagerly and inside decode graphs.
#pragma once

#include <cuda_runtime_api.h>

#include <utility>

#include "cuda/cuda_check.h"

namespace longctx::cuda {

// A non-blocking stream (it does not synchronize with the legacy default stream).
class Stream {
 public:
  Stream() { LONGCTX_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Stream() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// An event without timing, reused for every handoff: the wait is enqueued right after the
// record, so a later record cannot change what an earlier wait waits for.
class Handoff {
 public:
  Handoff() { LONGCTX_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~Handoff() {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  Handoff(const Handoff&) = delete;
  Handoff& operator=(const Handoff&) = delete;

  // `waiter` runs nothing enqueued after this call until `producer` has finished everything
  // enqueued on it before this call. No host synchronization; nothing when they are the same.
  void operator()(cudaStream_t producer, cudaStream_t waiter) {
    if (producer == waiter) return;
    LONGCTX_CUDA_CHECK(cudaEventRecord(event_, producer));
    LONGCTX_CUDA_CHECK(cudaStreamWaitEvent(waiter, event_, 0));
  }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace longctx::cuda

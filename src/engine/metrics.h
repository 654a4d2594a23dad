// The engine's counters and latency histograms, updated by the engine thread and read by any
// thread (the server's /metrics).
#pragma once

#include <mutex>
#include <string>

#include "longctx/engine.h"

namespace longctx {

Histogram make_histogram(std::vector<double> bounds);
void observe(Histogram& histogram, double value);

class MetricsRecorder {
 public:
  MetricsRecorder();
  template <typename Update>
  void update(Update&& update) {
    std::lock_guard<std::mutex> lock(mutex_);
    update(metrics_);
  }
  EngineMetrics snapshot() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return metrics_;
  }

 private:
  mutable std::mutex mutex_;
  EngineMetrics metrics_;
};

}  // namespace longctx

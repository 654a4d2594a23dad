#include "engine/metrics.h"

#include <algorithm>
#include <limits>

namespace longctx {

Histogram make_histogram(std::vector<double> bounds) {
  Histogram histogram;
  bounds.push_back(std::numeric_limits<double>::infinity());
  histogram.bounds = std::move(bounds);
  histogram.counts.assign(histogram.bounds.size(), 0);
  return histogram;
}

void observe(Histogram& histogram, double value) {
  for (size_t i = 0; i < histogram.bounds.size(); ++i) {
    if (value <= histogram.bounds[i]) ++histogram.counts[i];  // cumulative buckets
  }
  histogram.sum += value;
  ++histogram.count;
}

MetricsRecorder::MetricsRecorder() {
  metrics_.time_to_first_token_seconds = make_histogram(
      {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0});
  metrics_.time_per_output_token_seconds = make_histogram(
      {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0});
  metrics_.e2e_request_latency_seconds = make_histogram(
      {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0});
  metrics_.queue_time_seconds = make_histogram(
      {0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0});
}

}  // namespace longctx

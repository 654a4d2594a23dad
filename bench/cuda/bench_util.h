// Timing and roofline helpers shared by the CUDA benchmarks: the device's peaks, median times of
// CUDA events over repeats with the L2 cache flushed before each, and the result table.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"

namespace longctx::bench {

using cuda::DeviceBuffer;

struct DevicePeaks {
  std::string name;
  int sm_count = 0;
  size_t l2_bytes = 0;
  size_t memory_bytes = 0;
  double clock_bandwidth = 0;  // bytes/s from the memory clock and bus width (0: not reported)
  double table_bandwidth = 0;  // bytes/s from the data-sheet table (0: unknown model)
  double bandwidth = 0;        // the one fractions use: clock figure, else the table's
  double bf16_flops = 0;       // dense tensor-core peaks, FLOP/s (0: unknown)
  double fp8_flops = 0;
  double measured_copy = 0;  // device-to-device copy, read + write, bytes/s
};

DevicePeaks query_device(int device);
std::string describe(const DevicePeaks& peaks);

enum class Peak { kNone, kBF16, kFP8 };

class KernelTimer {
 public:
  KernelTimer(const DevicePeaks& peaks, int max_repeats, double budget_ms);
  ~KernelTimer();
  KernelTimer(const KernelTimer&) = delete;
  KernelTimer& operator=(const KernelTimer&) = delete;
  // Median of CUDA-event times of fn (on the default stream) after two warm-up calls; the L2 is
  // overwritten before every timed call, so each one starts cold as in a real forward step.
  double median_ms(const std::function<void()>& fn);

 private:
  DeviceBuffer<uint8_t> flush_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  int max_repeats_;
  double budget_ms_;
};

// Rows of the result table: printed as they come, optionally kept for a CSV file.
class ResultTable {
 public:
  explicit ResultTable(const DevicePeaks& peaks) : peaks_(peaks) {}
  void section(const std::string& title);
  // bytes: the fewest bytes the case must move; flops: by formula; peak: the tensor-core rate to
  // compare with (kNone: bandwidth only).
  void add(const std::string& family, const std::string& what, double ms, double bytes,
           double flops, Peak peak);
  void write_csv(const std::string& path) const;

 private:
  struct Row {
    std::string family, what;
    double ms, bytes, flops, bandwidth_fraction, peak_fraction;
  };
  const DevicePeaks& peaks_;
  std::vector<Row> rows_;
};

}  // namespace longctx::bench

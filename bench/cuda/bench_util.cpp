#include "bench_util.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "longctx/error.h"

namespace longctx::bench {

DevicePeaks query_device(int device) {
  LONGCTX_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp properties{};
  LONGCTX_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  DevicePeaks p;
  p.name = properties.name;
  p.sm_count = properties.multiProcessorCount;
  p.l2_bytes = static_cast<size_t>(properties.l2CacheSize);
  p.memory_bytes = properties.totalGlobalMem;
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess)
    clock_khz = 0;
  if (cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess)
    bus_bits = 0;
  cudaGetLastError();
  // HBM transfers on both clock edges.
  p.clock_bandwidth = 2.0 * clock_khz * 1e3 * bus_bits / 8.0;
  // Data-sheet figures (dense tensor-core rates, no sparsity).
  const std::string name = p.name;
  const auto has = [&](const char* text) { return name.find(text) != std::string::npos; };
  if (has("H200")) {
    p.table_bandwidth = 4.8e12, p.bf16_flops = 989e12, p.fp8_flops = 1979e12;
  } else if (has("H100") && has("PCIe")) {
    p.table_bandwidth = 2.0e12, p.bf16_flops = 756e12, p.fp8_flops = 1513e12;
  } else if (has("H100") && has("NVL")) {
    p.table_bandwidth = 3.9e12, p.bf16_flops = 835e12, p.fp8_flops = 1671e12;
  } else if (has("H100") || has("H800") || has("GH200")) {
    p.table_bandwidth = 3.35e12, p.bf16_flops = 989e12, p.fp8_flops = 1979e12;
  }
  p.bandwidth = p.clock_bandwidth > 0 ? p.clock_bandwidth : p.table_bandwidth;
  // The copy ceiling: 1 GiB device to device, bytes read plus written.
  {
    const size_t bytes = size_t{1} << 30;
    DeviceBuffer<uint8_t> a(bytes), b(bytes);
    LONGCTX_CUDA_CHECK(cudaMemset(a.data(), 1, bytes));
    cudaEvent_t start, stop;
    LONGCTX_CUDA_CHECK(cudaEventCreate(&start));
    LONGCTX_CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<float> times;
    for (int i = 0; i < 12; ++i) {
      LONGCTX_CUDA_CHECK(cudaEventRecord(start));
      LONGCTX_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice));
      LONGCTX_CUDA_CHECK(cudaEventRecord(stop));
      LONGCTX_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      LONGCTX_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (i >= 2) times.push_back(ms);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::sort(times.begin(), times.end());
    p.measured_copy = 2.0 * static_cast<double>(bytes) / (times[times.size() / 2] * 1e-3);
  }
  if (p.bandwidth <= 0) p.bandwidth = p.measured_copy;
  return p;
}

std::string describe(const DevicePeaks& p) {
  char text[768];
  std::snprintf(text, sizeof(text),
                "device: %s, %d SMs, %.1f GiB, L2 %.0f MiB\n"
                "HBM peak: %.2f TB/s from the memory clock and bus width, %.2f TB/s data sheet; "
                "fractions use %.2f TB/s\n"
                "measured device-to-device copy (read + write): %.2f TB/s (%.0f%% of peak)\n"
                "dense tensor-core peaks (data sheet): bf16 %.0f TFLOP/s, fp8 %.0f TFLOP/s\n",
                p.name.c_str(), p.sm_count, static_cast<double>(p.memory_bytes) / (1u << 30),
                static_cast<double>(p.l2_bytes) / (1u << 20), p.clock_bandwidth / 1e12,
                p.table_bandwidth / 1e12, p.bandwidth / 1e12, p.measured_copy / 1e12,
                100.0 * p.measured_copy / p.bandwidth, p.bf16_flops / 1e12, p.fp8_flops / 1e12);
  return text;
}

KernelTimer::KernelTimer(const DevicePeaks& peaks, int max_repeats, double budget_ms)
    : flush_(std::max<size_t>(2 * peaks.l2_bytes, size_t{128} << 20)),
      max_repeats_(std::max(max_repeats, 1)),
      budget_ms_(budget_ms) {
  LONGCTX_CUDA_CHECK(cudaEventCreate(&start_));
  LONGCTX_CUDA_CHECK(cudaEventCreate(&stop_));
}

KernelTimer::~KernelTimer() {
  if (start_ != nullptr) cudaEventDestroy(start_);
  if (stop_ != nullptr) cudaEventDestroy(stop_);
}

double KernelTimer::median_ms(const std::function<void()>& fn) {
  const auto timed = [&](int i) {
    LONGCTX_CUDA_CHECK(cudaMemsetAsync(flush_.data(), i & 0xff, flush_.bytes()));
    LONGCTX_CUDA_CHECK(cudaEventRecord(start_));
    fn();
    LONGCTX_CUDA_CHECK(cudaEventRecord(stop_));
    LONGCTX_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    LONGCTX_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return static_cast<double>(ms);
  };
  timed(0);
  const double estimate = timed(1);
  const int repeats = std::clamp(static_cast<int>(budget_ms_ / std::max(estimate, 1e-3)),
                                 std::min(3, max_repeats_), max_repeats_);
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i)
    times.push_back(timed(i + 2));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void ResultTable::section(const std::string& title) {
  std::printf("\n== %s\n%-62s %10s %9s %6s %9s %7s\n", title.c_str(), "case", "ms", "GB/s", "%HBM",
              "TFLOP/s", "%peak");
  std::fflush(stdout);
}

void ResultTable::add(const std::string& family, const std::string& what, double ms, double bytes,
                      double flops, Peak peak) {
  const double seconds = ms * 1e-3;
  const double bandwidth = bytes / seconds;
  const double rate = flops / seconds;
  const double peak_rate =
      peak == Peak::kFP8 ? peaks_.fp8_flops : (peak == Peak::kBF16 ? peaks_.bf16_flops : 0.0);
  Row row{family,
          what,
          ms,
          bytes,
          flops,
          bandwidth / peaks_.bandwidth,
          peak_rate > 0 ? rate / peak_rate : 0.0};
  char peak_text[32] = "-";
  if (peak_rate > 0) {
    std::snprintf(peak_text, sizeof(peak_text), "%.1f%s", 100.0 * row.peak_fraction,
                  peak == Peak::kFP8 ? " f8" : " bf");
  }
  std::printf("%-62s %10.4f %9.1f %6.1f %9.2f %7s\n", what.c_str(), ms, bandwidth / 1e9,
              100.0 * row.bandwidth_fraction, rate / 1e12, peak_text);
  std::fflush(stdout);
  rows_.push_back(row);
}

void ResultTable::write_csv(const std::string& path) const {
  std::ofstream out(path);
  if (!out) fail("cannot write ", path);
  out << "family,case,ms,bytes,flops,GBps,hbm_fraction,TFLOPs,peak_fraction\n";
  for (const Row& r : rows_) {
    out << r.family << ",\"" << r.what << "\"," << r.ms << "," << r.bytes << "," << r.flops << ","
        << r.bytes / r.ms / 1e6 << "," << r.bandwidth_fraction << "," << r.flops / r.ms / 1e9 << ","
        << r.peak_fraction << "\n";
  }
}

}  // namespace longctx::bench

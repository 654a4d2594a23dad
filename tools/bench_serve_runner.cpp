#include "bench_serve_runner.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <random>
#include <thread>

namespace longctx::cli {
namespace {

// Arrival gaps use their own generator, so changing the rate does not change the prompts.
constexpr uint64_t kArrivalSeedSalt = 0x9e3779b97f4a7c15ull;

}  // namespace

std::vector<double> arrival_times(const BenchServeOptions& options) {
  std::vector<double> times(static_cast<size_t>(options.num_prompts), 0.0);
  if (options.request_rate <= 0) return times;
  // Gamma gaps of shape k and mean 1/rate: k = 1 is a Poisson process, smaller k is burstier.
  std::mt19937_64 rng(options.seed ^ kArrivalSeedSalt);
  std::gamma_distribution<double> gap(options.burstiness,
                                      1.0 / (options.request_rate * options.burstiness));
  double now = 0;
  for (size_t i = 0; i < times.size(); ++i) {
    times[i] = now;  // the first request goes at once
    now += gap(rng);
  }
  return times;
}

BenchRun run_bench_serve(const BenchServeOptions& options, const BenchPromptSet& prompts,
                         const std::string& model) {
  const std::vector<double> arrivals = arrival_times(options);
  const int64_t count = options.num_prompts;
  BenchRun run;
  run.records.resize(static_cast<size_t>(count));
  run.client_threads =
      std::min({count, options.max_concurrency.value_or(count), kMaxClientThreads});

  // Made here, so that a client that cannot be made fails the run, not a thread.
  std::vector<std::unique_ptr<BenchServeClient>> clients;
  for (int64_t i = 0; i < run.client_threads; ++i)
    clients.push_back(std::make_unique<BenchServeClient>(options, model));

  std::atomic<int64_t> next_index{0};
  const BenchClock::time_point epoch = BenchClock::now();
  const auto work = [&](BenchServeClient& client) {
    for (int64_t index = next_index++; index < count; index = next_index++) {
      RequestRecord& record = run.records[static_cast<size_t>(index)];
      try {
        // The prompt is made before the request's arrival time, so making it costs no latency.
        const BenchPrompt prompt = prompts.prompt(index);
        std::this_thread::sleep_until(
            epoch + std::chrono::duration_cast<BenchClock::duration>(
                        std::chrono::duration<double>(arrivals[static_cast<size_t>(index)])));
        record = client.send(prompt, epoch);
      } catch (const std::exception& error) {
        record = RequestRecord();
        record.error = std::string("client error: ") + error.what();
      }
    }
  };
  {
    std::vector<std::jthread> threads;
    threads.reserve(static_cast<size_t>(run.client_threads));
    for (int64_t i = 0; i < run.client_threads; ++i)
      threads.emplace_back(work, std::ref(*clients[static_cast<size_t>(i)]));
  }  // joined here
  double end_s = 0;
  for (const RequestRecord& record : run.records)
    end_s = std::max(end_s, record.start_s + record.e2el_s);
  run.duration_s = end_s;
  return run;
}

}  // namespace longctx::cli

#include "common/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace longctx {
namespace {

thread_local bool t_inside_parallel_for = false;

// Range r of [0, n) split into `parts` nearly equal contiguous pieces.
std::pair<size_t, size_t> range_of(size_t r, size_t parts, size_t n) {
  const size_t base = n / parts;
  const size_t extra = n % parts;
  const size_t begin = r * base + std::min(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0)};
}

}  // namespace

ThreadPool::ThreadPool(size_t num_threads) {
  const size_t extra_workers = num_threads > 1 ? num_threads - 1 : 0;
  workers_.reserve(extra_workers);
  for (size_t i = 0; i < extra_workers; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i + 1); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t)>& body,
                              size_t min_chunk) {
  if (n == 0) return;
  const size_t max_ranges = std::max<size_t>(1, n / std::max<size_t>(1, min_chunk));
  const size_t ranges = std::min(num_threads(), max_ranges);
  if (ranges <= 1 || t_inside_parallel_for) {
    body(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    n_ = n;
    num_ranges_ = ranges;
    pending_ = ranges - 1;
    ++generation_;
  }
  work_ready_.notify_all();
  t_inside_parallel_for = true;
  const auto [begin, end] = range_of(0, ranges, n);
  body(begin, end);
  t_inside_parallel_for = false;
  std::unique_lock<std::mutex> lock(mutex_);
  work_done_.wait(lock, [this] { return pending_ == 0; });
  body_ = nullptr;
}

void ThreadPool::worker_loop(size_t worker_index) {
  size_t seen_generation = 0;
  t_inside_parallel_for = true;
  while (true) {
    const std::function<void(size_t, size_t)>* body = nullptr;
    size_t n = 0;
    size_t ranges = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
      if (stopping_) return;
      seen_generation = generation_;
      body = body_;
      n = n_;
      ranges = num_ranges_;
    }
    if (worker_index < ranges) {
      const auto [begin, end] = range_of(worker_index, ranges, n);
      (*body)(begin, end);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) work_done_.notify_one();
    }
  }
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool([] {
    if (const char* value = std::getenv("LONGCTX_NUM_THREADS")) {
      const long parsed = std::strtol(value, nullptr, 10);
      if (parsed > 0) return static_cast<size_t>(parsed);
    }
    return static_cast<size_t>(std::max(1u, std::thread::hardware_concurrency()));
  }());
  return pool;
}

}  // namespace longctx

// A fixed pool of worker threads for data-parallel loops over rows.
//
// parallel_for splits [0, n) into contiguous ranges, one per worker, so every index is
// computed by exactly one thread and no result depends on how many threads there are: the
// CPU reference stays deterministic whatever the machine.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace longctx {

class ThreadPool {
 public:
  explicit ThreadPool(size_t num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t num_threads() const { return workers_.size() + 1; }

  // Calls body(begin, end) on disjoint ranges covering [0, n); returns when all are done.
  // Ranges hold at least min_chunk indices so tiny loops stay on the calling thread.
  // Re-entrant calls from inside a body run serially on the calling thread.
  void parallel_for(size_t n, const std::function<void(size_t, size_t)>& body,
                    size_t min_chunk = 1);

  // The process-wide pool, sized by LONGCTX_NUM_THREADS or the hardware concurrency.
  static ThreadPool& global();

 private:
  void worker_loop(size_t worker_index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  std::mutex call_mutex_;  // one parallel_for at a time
  const std::function<void(size_t, size_t)>* body_ = nullptr;
  size_t n_ = 0;
  size_t num_ranges_ = 0;
  size_t generation_ = 0;
  size_t pending_ = 0;
  bool stopping_ = false;
};

}  // namespace longctx

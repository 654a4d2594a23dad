// The load of `longctx bench serve`: when each request arrives (all at once, or a gamma
// process at --request-rate) and a pool of client threads, one per request that may be in
// flight, that sends them in arrival order. The pool's size is the concurrency bound: a request
// that arrives while every thread is busy waits for the first to finish, as with vllm's
// semaphore.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench_serve_client.h"
#include "bench_serve_dataset.h"
#include "bench_serve_options.h"

namespace longctx::cli {

// Threads are the client's unit of concurrency; without --max-concurrency they are capped here
// (a note says so when the cap binds).
constexpr int64_t kMaxClientThreads = 1024;

struct BenchRun {
  std::vector<RequestRecord> records;  // by prompt index
  double duration_s = 0;               // first send to last end
  int64_t client_threads = 0;
};

// Arrival offsets in seconds from the start, one per request, nondecreasing; all 0 without a
// request rate. Depends only on the seed.
std::vector<double> arrival_times(const BenchServeOptions& options);

BenchRun run_bench_serve(const BenchServeOptions& options, const BenchPromptSet& prompts,
                         const std::string& model);

}  // namespace longctx::cli

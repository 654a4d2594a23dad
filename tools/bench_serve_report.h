// What `longctx bench serve` hands back: the printed table (laid out like vllm's, so that
// readers of either compare them line by line) and the --save-result JSON with every figure
// and one record per request.
#pragma once

#include <cstdio>
#include <string>

#include "bench_serve_metrics.h"
#include "bench_serve_options.h"
#include "bench_serve_runner.h"

namespace longctx::cli {

struct BenchContext {
  std::string model;
  std::string started_at;  // local time, "20250131-142501"
};

void print_bench_summary(std::FILE* out, const BenchSummary& summary,
                         const BenchServeOptions& options);

// --result-dir / --result-filename, or a name made of backend, rate, concurrency, model and time.
std::string bench_result_path(const BenchServeOptions& options, const BenchContext& context);

// Writes the result JSON to `path`; throws longctx::Error when it cannot.
void save_bench_result(const std::string& path, const BenchRun& run, const BenchSummary& summary,
                       const BenchServeOptions& options, const BenchContext& context);

}  // namespace longctx::cli

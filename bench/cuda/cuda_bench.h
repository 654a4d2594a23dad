// `longctx bench kernels` and `longctx bench e2e` on the CUDA backend. The CLI (tools/bench_*.cpp)
// parses the flags into these options; this library (longctx_cuda_bench) exists only in builds
// with the CUDA backend and defines LONGCTX_HAS_CUDA_BENCH for its users.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv/kv_layout.h"

namespace longctx::bench {

struct KernelBenchOptions {
  // Families to run: attention, indexer, compressor, gemm, moe, hc (empty: all).
  std::vector<std::string> only;
  std::vector<std::string> models = {"flash", "pro"};
  std::vector<int64_t> contexts = {8192, 131072, 1048576};
  std::vector<int64_t> batches = {1, 8, 64};
  std::vector<int64_t> gemm_rows = {1, 8, 64, 512, 4096, 8192};
  std::vector<int64_t> moe_tokens = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  // Prefill steps of the MoE with 8 experts: tensor cores against the fp32 kernels.
  std::vector<int64_t> moe_prefill_tokens = {1024, 2048, 4096, 8192, 16384};
  KvDtype kv_dtype = KvDtype::kFP8;
  IndexerKeyDtype key_dtype = IndexerKeyDtype::kFP4;
  int max_repeats = 50;
  double budget_ms = 300;  // per case: repeats = min(max_repeats, budget / one run), at least 3
  std::string csv_path;    // also write the table as CSV
  int device = 0;
};

int run_kernel_bench(const KernelBenchOptions& options);

struct E2eBenchOptions {
  std::string model_dir;   // a checkpoint, or empty with `synthetic`
  std::string synthetic;   // "flash" or "pro": random weights made on the device
  int64_t layers = -1;     // synthetic: main layers (-1: the preset's)
  int64_t experts = -1;    // synthetic: routed experts (-1: the preset's)
  int64_t context = 8192;  // tokens in each sequence when decode is timed
  int64_t batch = 1;       // sequences decoded together
  int64_t decode_steps = 16;
  int64_t chunk = 8192;         // prefill chunk size
  bool random_kv = false;       // skip the prefill: fill the KV pages with random entries
  int64_t prefill_tokens = -1;  // with random_kv: prefill (timed) this many last positions before
                                // the decode, over the random ones (-1: none; without random_kv:
                                // the whole history is prefilled)
  KvCacheOptions kv{KvDtype::kFP8, IndexerKeyDtype::kFP4};
  uint64_t seed = 1;
  int device = 0;
  bool batch_invariant = false;
  bool stage_times = false;  // print the GPU time of each forward stage (prefill, one decode step)
};

int run_e2e_bench(const E2eBenchOptions& options);

}  // namespace longctx::bench

// The CUDA backend for Hopper (sm_90a): the whole V4 forward on one GPU, behind the same
// interface as the CPU reference (src/backend/backend.h).
//
// Weights are uploaded once in their stored precision (bf16, fp8 e4m3 + 128x128 e8m0 scales,
// packed fp4 + per-32 scales; small vectors as fp32) and decoded inside the kernels. The KV
// cache lives in device memory with exactly the page layout of src/kv (same page ids, same bytes
// per entry, compressor state in the window pages), so the KV manager and prefix caching work
// unchanged. Activations are fp32, as in the reference; see CudaOptions for the tensor-core
// (fast) and batch-invariant modes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "kv/kv_cache_manager.h"
#include "model/model_weights.h"

namespace longctx {

// How the backend computes. By default (fast), steps of at least tensor_core_min_rows rows run
// the tensor-core kernels, which compute in the precision of DeepSeek's reference inference code
// (fp8 activations x fp8/fp4 weights with fp32 promotion, bf16 attention): a row's bits then
// depend on how many rows share its step. batch_invariant keeps the fp32 kernels with a fixed
// reduction order everywhere: decode == prefill == batched, bit for bit, and the closest
// agreement with the CPU reference.
struct CudaOptions {
  int device = 0;
  bool batch_invariant = false;
  int tensor_core_min_rows = 64;
};

class CudaBackend : public Backend {
 public:
  // Uploads the weights and allocates the KV pools on device `options.device`.
  CudaBackend(const ModelWeights& weights, const KvLayout& layout, const KvPoolSizes& sizes,
              const CudaOptions& options = {});
  // Benchmarks at full size without a checkpoint: every linear of `skeleton` that has no data
  // (weight == nullptr) is made on the device, N(0, 1/sqrt(in)) (the embedding N(0, 1)) quantized
  // into its stored format exactly as a released checkpoint is; the small fp32 vectors come from
  // the skeleton. The skeleton must outlive the backend, as a loaded model must.
  struct DeviceRandomWeights {
    uint64_t seed = 0;
  };
  CudaBackend(const ModelWeights& skeleton, const KvLayout& layout, const KvPoolSizes& sizes,
              DeviceRandomWeights random, const CudaOptions& options = {});
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  const KvLayout& kv_layout() const override;
  void forward(const ForwardBatch& batch, ForwardOutput* output) override;
  void forward_mtp(std::span<const MtpChunk> chunks, int64_t mtp_index, ForwardOutput* output) override;
  // Speculative decoding: compressor-state snapshots taken by the compressor kernels.
  bool supports_state_snapshots() const override { return true; }
  size_t state_snapshot_floats() const override;
  void restore_state(const BlockTables& blocks, int64_t position, const float* snapshot) override;
  // Sampling on the GPU (cuda/sampling.h).
  bool supports_sampling() const override { return true; }
  void keep_logits_on_device(bool on) override;
  void sample(std::span<const SamplingRow> rows, SampleOutput* output) override;

  // Bytes of device memory held for weights and for the KV pools.
  size_t weight_bytes() const;
  size_t kv_bytes() const;

  // The KV pools as allocated: bytes of the window and compressed page buffers, and how much the
  // device's free memory dropped while they were allocated (allocation granularity included).
  struct KvAllocation {
    size_t window_bytes = 0;
    size_t compressed_bytes = 0;
    size_t device_bytes = 0;
  };
  KvAllocation kv_allocation() const;
  // Fills every page of every layer with random entries stored in the cache's format and a finite
  // compressor state: decode at a long context can be timed without running the prefill.
  void fill_kv_random(uint64_t seed);

  // GPU time per stage of the forward (hyper-connections, projections, compressors, indexer,
  // attention, experts, ...), summed over steps, for the benchmarks. While on, decode steps run
  // without graphs and every step waits for the GPU at its end.
  struct StageTime {
    std::string stage;
    double milliseconds = 0;
    long calls = 0;
  };
  void set_stage_timing(bool on);
  std::vector<StageTime> stage_times() const;
  void reset_stage_times();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace longctx

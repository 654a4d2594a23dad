// The CPU reference backend: the whole V4 forward in fp32 with plain loops, multithreaded
// over rows. It is the oracle the CUDA backend is checked against, and it is deterministic by
// construction: every value of a row is computed by the same operations in the same order
// whatever else is in the batch and however a prompt was chunked.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "cpu/cpu_kv_storage.h"
#include "model/model_weights.h"
#include "model/rope.h"

namespace longctx {

class CpuBackend : public Backend {
 public:
  CpuBackend(const ModelWeights& weights, const KvLayout& layout, const KvPoolSizes& sizes);

  std::string name() const override { return "cpu"; }
  const KvLayout& kv_layout() const override { return storage_.layout(); }
  void forward(const ForwardBatch& batch, ForwardOutput* output) override;
  void forward_mtp(std::span<const MtpChunk> chunks, int64_t mtp_index, ForwardOutput* output) override;
  bool supports_state_snapshots() const override { return true; }
  size_t state_snapshot_floats() const override { return snapshot_floats_; }
  void restore_state(const BlockTables& blocks, int64_t position, const float* snapshot) override;

  CpuKvStorage& storage() { return storage_; }

 private:
  struct Rows;
  void run_block(const BlockWeights& block, const Rows& rows, float* streams);
  void emit_logits(const Rows& rows, const float* streams, const HyperConnectionWeights& hc_head,
                   const std::vector<float>& norm, ForwardOutput* output, bool return_hidden);

  const ModelWeights& weights_;
  CpuKvStorage storage_;
  RopeTable window_rope_;
  RopeTable compressed_rope_;
  std::vector<size_t> snapshot_offset_;  // per layer
  size_t snapshot_floats_ = 0;
};

}  // namespace longctx

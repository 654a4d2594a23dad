// The contract between the model runner and a compute backend (CPU reference, CUDA).
//
// One forward step takes a batch of sequence chunks: each chunk is a run of consecutive
// positions of one sequence, with the block tables that say where its KV lives. Prefill is a
// long chunk, decode a chunk of one token; a batch may mix both. The backend writes new KV
// into the pages it was given and returns logits for the requested trailing positions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "backend/sampling.h"
#include "kv/block_tables.h"
#include "kv/kv_layout.h"
#include "longctx/error.h"
#include "longctx/model_config.h"

namespace longctx {

struct SequenceChunk {
  std::span<const int32_t> tokens;  // tokens at positions [start_pos, start_pos + size)
  int64_t start_pos = 0;
  const BlockTables* blocks = nullptr;
  int64_t num_logits = 1;  // logits for this many trailing positions (0..tokens.size())
  // Speculative positions: when set, the compressor state of every compressed layer after each
  // position of the chunk is copied here, [size][state_snapshot_floats()], so that the state
  // after an accepted prefix can be restored with restore_state().
  float* state_snapshots = nullptr;
};

struct ForwardBatch {
  std::vector<SequenceChunk> chunks;
  // Also return the final hyper-connection streams [rows, hc_mult, hidden] of the logit rows
  // (the MTP block's input).
  bool return_hidden = false;
};

// Input of the MTP block for one sequence: at position p it sees the main model's hidden
// streams of p and the token of p + 1, and predicts the token of p + 2.
struct MtpChunk {
  std::span<const int32_t> next_tokens;  // token of position p + 1, for p in the chunk
  std::span<const float> hidden;         // [size, hc_mult, hidden] from the main model
  int64_t start_pos = 0;
  const BlockTables* blocks = nullptr;
  int64_t num_logits = 1;
};

struct ForwardOutput {
  int64_t rows = 0;             // sum of num_logits over the chunks, in chunk order
  std::vector<float> logits;    // [rows, vocab]; empty while the logits stay on the device
  std::vector<float> hidden;    // [rows, hc_mult, hidden] when requested
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual const KvLayout& kv_layout() const = 0;
  // Runs the main model over the batch; throws Error on invalid input.
  virtual void forward(const ForwardBatch& batch, ForwardOutput* output) = 0;
  // Runs MTP block `mtp_index` over the chunks.
  virtual void forward_mtp(std::span<const MtpChunk> chunks, int64_t mtp_index,
                           ForwardOutput* output) = 0;

  // Speculative decoding support: rolling a sequence back to an accepted prefix. Raw KV and
  // compressed entries written for rejected positions are simply overwritten later; only the
  // streaming compressor state needs restoring.
  virtual bool supports_state_snapshots() const { return false; }
  // Floats of one position's snapshot (all compressed layers).
  virtual size_t state_snapshot_floats() const { return 0; }
  // Makes the sequence's state that after position `position`, from the snapshot taken then.
  virtual void restore_state(const BlockTables& /*blocks*/, int64_t /*position*/,
                             const float* /*snapshot*/) {
    fail(name(), " backend cannot roll back speculative positions");
  }

  // Sampling where the logits are (backend/sampling.h), the same tokens as the engine's sampler.
  // While logits stay on the device, forward() and forward_mtp() return no logits (the rows
  // count and the hidden streams still) and sample() draws from the logit rows of the latest of
  // those calls, returning the raw rows only of the draws that ask for them.
  virtual bool supports_sampling() const { return false; }
  virtual void keep_logits_on_device(bool /*on*/) { fail(name(), " backend cannot sample on its device"); }
  virtual void sample(std::span<const SamplingRow> /*rows*/, SampleOutput* /*output*/) {
    fail(name(), " backend cannot sample on its device");
  }
};

}  // namespace longctx

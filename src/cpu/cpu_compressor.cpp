#include "cpu/cpu_compressor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/block_quant.h"
#include "cpu/cpu_ops.h"

namespace longctx::cpu {
namespace {

// A streaming softmax-weighted sum over positions, per channel: [max][sum][weighted].
struct Accumulator {
  float* data;
  int64_t channels;

  float* max() const { return data; }
  float* sum() const { return data + channels; }
  float* weighted() const { return data + 2 * channels; }

  void reset() const {
    std::fill(max(), max() + channels, -std::numeric_limits<float>::infinity());
    std::fill(sum(), sum() + 2 * channels, 0.0f);
  }

  // Adds one position: value[c] with logit score[c] + bias[c].
  void add(const float* value, const float* score, const float* bias) const {
    for (int64_t c = 0; c < channels; ++c) {
      const float logit = score[c] + bias[c];
      if (logit > max()[c]) {
        const float rescale = std::exp(max()[c] - logit);
        sum()[c] = sum()[c] * rescale + 1.0f;
        weighted()[c] = weighted()[c] * rescale + value[c];
        max()[c] = logit;
      } else {
        const float weight = std::exp(logit - max()[c]);
        sum()[c] += weight;
        weighted()[c] += weight * value[c];
      }
    }
  }

  void result(float* out) const {
    for (int64_t c = 0; c < channels; ++c) out[c] = weighted()[c] / sum()[c];
  }

  void copy_from(const Accumulator& other) const {
    std::memcpy(data, other.data, static_cast<size_t>(3 * channels) * sizeof(float));
  }
};

// The accumulators of one compressor inside a layer's state: `cur` pools the entry being
// built; with overlap, `next` pools the first channel half for the following entry.
struct CompressorState {
  Accumulator cur;
  Accumulator next;
  bool overlap;
};

CompressorState main_state(const LayerContext& ctx, float* state) {
  const LayerKvLayout& l = ctx.kv;
  return {{state + l.main_accumulator_offset(0), l.main_accumulator.channels},
          {state + l.main_accumulator_offset(l.main_accumulators > 1 ? 1 : 0), l.main_accumulator.channels},
          l.main_accumulators > 1};
}

CompressorState index_state(const LayerContext& ctx, float* state) {
  const LayerKvLayout& l = ctx.kv;
  return {{state + l.indexer_accumulator_offset(0), l.indexer_accumulator.channels},
          {state + l.indexer_accumulator_offset(1), l.indexer_accumulator.channels},
          true};
}

// Adds position `position` (projections kv/score of width (1 + overlap) * channels) and, when
// it completes an entry, writes the pooled vector to `entry` and returns true.
bool feed(const CompressorState& state, const CompressorWeights& w, int64_t position,
          const float* kv, const float* score, float* entry) {
  const int64_t ratio = w.ratio;
  const int64_t channels = w.head_dim;
  const float* ape = w.ape.data() + (position % ratio) * w.width();
  if (state.overlap) {
    // Second channel half -> this entry; first half -> the next entry.
    state.cur.add(kv + channels, score + channels, ape + channels);
    state.next.add(kv, score, ape);
  } else {
    state.cur.add(kv, score, ape);
  }
  if ((position + 1) % ratio != 0) return false;
  state.cur.result(entry);
  if (state.overlap) {
    state.cur.copy_from(state.next);
    state.next.reset();
  } else {
    state.cur.reset();
  }
  return true;
}

}  // namespace

void finish_main_entry(const LayerContext& ctx, int64_t entry, float* values) {
  const ModelConfig& c = ctx.config;
  const CompressorWeights& w = *ctx.weights.compressor;
  const size_t d = static_cast<size_t>(c.head_dim);
  const size_t nope = static_cast<size_t>(c.nope_head_dim());
  rms_norm(values, w.norm.data(), d, static_cast<float>(c.rms_norm_eps), values);
  ctx.rope.rotate(values + nope, entry * w.ratio, /*inverse=*/false);
  fp8_simulate_blocks(values, nope, 64);
}

void finish_index_key(const LayerContext& ctx, int64_t entry, float* values) {
  const ModelConfig& c = ctx.config;
  const CompressorWeights& w = ctx.weights.indexer->compressor;
  const size_t d = static_cast<size_t>(c.index_head_dim);
  rms_norm(values, w.norm.data(), d, static_cast<float>(c.rms_norm_eps), values);
  ctx.rope.rotate(values + d - static_cast<size_t>(c.qk_rope_head_dim), entry * w.ratio, false);
  hadamard_transform(values, d);
  fp4_simulate_blocks(values, d, 32);
}

void run_compressors(const LayerContext& ctx, const ChunkView& chunk, const float* main_kv,
                     const float* main_score, const float* index_kv, const float* index_score) {
  const LayerKvLayout& l = ctx.kv;
  const CompressorWeights& main = *ctx.weights.compressor;
  const CompressorWeights* index = ctx.weights.indexer ? &ctx.weights.indexer->compressor : nullptr;
  const int64_t main_width = main.width();
  const int64_t index_width = index ? index->width() : 0;
  std::vector<float> entry(static_cast<size_t>(std::max(ctx.config.head_dim, ctx.config.index_head_dim)));

  for (int64_t i = 0; i < chunk.rows; ++i) {
    const int64_t position = chunk.start_pos + i;
    float* state = ctx.state(chunk, position);
    if (position % kKvBlockSize == 0) {
      // A new block: start from empty accumulators, or carry the previous block's state over.
      if (position == 0) {
        CompressorState fresh = main_state(ctx, state);
        fresh.cur.reset();
        fresh.next.reset();
        if (index) {
          CompressorState fresh_index = index_state(ctx, state);
          fresh_index.cur.reset();
          fresh_index.next.reset();
        }
      } else {
        std::memcpy(state, ctx.state(chunk, position - 1), l.state_floats * sizeof(float));
      }
    }
    const int64_t row = chunk.first_row + i;
    if (feed(main_state(ctx, state), main, position, main_kv + row * main_width,
             main_score + row * main_width, entry.data())) {
      const int64_t e = position / main.ratio;
      finish_main_entry(ctx, e, entry.data());
      ctx.kv_codec.encode(entry.data(), ctx.entry_bytes(chunk, e));
    }
    if (index != nullptr &&
        feed(index_state(ctx, state), *index, position, index_kv + row * index_width,
             index_score + row * index_width, entry.data())) {
      const int64_t e = position / index->ratio;
      finish_index_key(ctx, e, entry.data());
      ctx.key_codec.encode(entry.data(), ctx.key_bytes(chunk, e));
    }
    if (chunk.state_snapshots != nullptr) {
      std::memcpy(chunk.state_snapshots + static_cast<size_t>(i) * ctx.snapshot_stride + ctx.snapshot_offset, state,
                  l.state_floats * sizeof(float));
    }
  }
}

}  // namespace longctx::cpu

#include "cpu/cpu_backend.h"

#include <algorithm>
#include <set>

#include "backend/chunk_validation.h"
#include "cpu/cpu_attention.h"
#include "cpu/cpu_hyper_connection.h"
#include "cpu/cpu_linear.h"
#include "cpu/cpu_moe.h"
#include "cpu/cpu_ops.h"
#include "longctx/error.h"

namespace longctx {

using cpu::ChunkView;

// The rows of a step: every chunk's positions laid end to end.
struct CpuBackend::Rows {
  std::vector<ChunkView> chunks;
  std::vector<int32_t> tokens;       // the token each row routes by (hash layers)
  std::vector<int64_t> logit_rows;   // rows whose logits are returned, in output order
  int64_t count = 0;
};

CpuBackend::CpuBackend(const ModelWeights& weights, const KvLayout& layout, const KvPoolSizes& sizes)
    : weights_(weights),
      storage_(layout, sizes),
      window_rope_(RopeTable::for_layer(weights.config, 0)),
      compressed_rope_(RopeTable::for_layer(weights.config, 4)) {
  for (const LayerKvLayout& layer : layout.layers) {
    snapshot_offset_.push_back(snapshot_floats_);
    snapshot_floats_ += layer.state_floats;
  }
}

void CpuBackend::restore_state(const BlockTables& blocks, int64_t position, const float* snapshot) {
  const int64_t block = position / kKvBlockSize;
  if (block >= static_cast<int64_t>(blocks.window.size()) || blocks.window[static_cast<size_t>(block)] == kNoPage) {
    fail("restore_state: no window page for position ", position);
  }
  for (const LayerKvLayout& layer : storage_.layout().layers) {
    if (layer.state_floats == 0) continue;
    float* state = reinterpret_cast<float*>(storage_.window_page(layer.layer, blocks.window[static_cast<size_t>(block)]) +
                                            layer.state_offset);
    std::copy_n(snapshot + snapshot_offset_[static_cast<size_t>(layer.layer)], layer.state_floats, state);
  }
}

void CpuBackend::run_block(const BlockWeights& block, const Rows& rows, float* streams) {
  const ModelConfig& c = weights_.config;
  const int64_t n = rows.count;
  const int64_t hc = c.hc_mult;
  const int64_t hidden = c.hidden_size;
  std::vector<float> x(static_cast<size_t>(n * hidden));
  std::vector<float> out(static_cast<size_t>(n * hidden));
  std::vector<float> post(static_cast<size_t>(n * hc));
  std::vector<float> comb(static_cast<size_t>(n * hc * hc));
  const float eps = static_cast<float>(c.rms_norm_eps);

  cpu::hc_pre(block.hc_attn, c, streams, n, x.data(), post.data(), comb.data());
  for (int64_t r = 0; r < n; ++r) cpu::rms_norm(&x[static_cast<size_t>(r * hidden)], block.attn_norm.data(), static_cast<size_t>(hidden), eps, &x[static_cast<size_t>(r * hidden)]);
  cpu::LayerContext context(c, block.attn, storage_.layout().layers[static_cast<size_t>(block.layer)],
                            block.ratio == 0 ? window_rope_ : compressed_rope_, storage_,
                            storage_.layout().options);
  context.snapshot_offset = snapshot_offset_[static_cast<size_t>(block.layer)];
  context.snapshot_stride = snapshot_floats_;
  cpu::attention_sublayer(context, rows.chunks, x.data(), n, out.data());
  cpu::hc_post(c, out.data(), post.data(), comb.data(), n, streams);

  cpu::hc_pre(block.hc_ffn, c, streams, n, x.data(), post.data(), comb.data());
  for (int64_t r = 0; r < n; ++r) cpu::rms_norm(&x[static_cast<size_t>(r * hidden)], block.ffn_norm.data(), static_cast<size_t>(hidden), eps, &x[static_cast<size_t>(r * hidden)]);
  cpu::moe_sublayer(block.ffn, c, x.data(), rows.tokens, out.data());
  cpu::hc_post(c, out.data(), post.data(), comb.data(), n, streams);
}

void CpuBackend::emit_logits(const Rows& rows, const float* streams,
                             const HyperConnectionWeights& hc_head, const std::vector<float>& norm,
                             ForwardOutput* output, bool return_hidden) {
  const ModelConfig& c = weights_.config;
  const int64_t hidden = c.hidden_size;
  const int64_t stream_size = c.hc_mult * hidden;
  const int64_t count = static_cast<int64_t>(rows.logit_rows.size());
  std::vector<float> selected(static_cast<size_t>(count * stream_size));
  for (int64_t i = 0; i < count; ++i) {
    const float* source = streams + rows.logit_rows[static_cast<size_t>(i)] * stream_size;
    std::copy(source, source + stream_size, selected.begin() + i * stream_size);
  }
  std::vector<float> y(static_cast<size_t>(count * hidden));
  cpu::hc_head(hc_head, c, selected.data(), count, y.data());
  for (int64_t i = 0; i < count; ++i) {
    float* row = y.data() + i * hidden;
    cpu::rms_norm(row, norm.data(), static_cast<size_t>(hidden), static_cast<float>(c.rms_norm_eps), row);
  }
  output->rows = count;
  output->logits.resize(static_cast<size_t>(count * c.vocab_size));
  cpu::linear(weights_.head, y.data(), count, output->logits.data());
  if (return_hidden) {
    output->hidden = std::move(selected);
  } else {
    output->hidden.clear();
  }
}

void CpuBackend::forward(const ForwardBatch& batch, ForwardOutput* output) {
  const ModelConfig& c = weights_.config;
  Rows rows;
  std::set<const BlockTables*> seen;
  for (size_t i = 0; i < batch.chunks.size(); ++i) {
    const SequenceChunk& chunk = batch.chunks[i];
    validate_chunk(c, kv_layout(), chunk.tokens, chunk.start_pos, chunk.blocks, chunk.num_logits, i);
    if (!seen.insert(chunk.blocks).second) fail("chunk ", i, ": a sequence appears twice in one batch");
    const int64_t size = static_cast<int64_t>(chunk.tokens.size());
    rows.chunks.push_back({rows.count, size, chunk.start_pos, chunk.blocks, chunk.state_snapshots});
    rows.tokens.insert(rows.tokens.end(), chunk.tokens.begin(), chunk.tokens.end());
    for (int64_t r = size - chunk.num_logits; r < size; ++r) rows.logit_rows.push_back(rows.count + r);
    rows.count += size;
  }
  const int64_t hidden = c.hidden_size;
  const int64_t hc = c.hc_mult;
  // Every token starts as hc_mult copies of its embedding.
  std::vector<float> embedded(static_cast<size_t>(rows.count * hidden));
  cpu::embedding(weights_.embed, rows.tokens, embedded.data());
  std::vector<float> streams(static_cast<size_t>(rows.count * hc * hidden));
  for (int64_t r = 0; r < rows.count; ++r) {
    for (int64_t j = 0; j < hc; ++j) {
      std::copy_n(embedded.data() + r * hidden, hidden, streams.data() + (r * hc + j) * hidden);
    }
  }
  for (const BlockWeights& block : weights_.layers) run_block(block, rows, streams.data());
  emit_logits(rows, streams.data(), weights_.hc_head, weights_.norm, output, batch.return_hidden);
}

void CpuBackend::forward_mtp(std::span<const MtpChunk> chunks, int64_t mtp_index, ForwardOutput* output) {
  const ModelConfig& c = weights_.config;
  if (mtp_index < 0 || mtp_index >= static_cast<int64_t>(weights_.mtp.size())) {
    fail("MTP block ", mtp_index, " does not exist (the model has ", weights_.mtp.size(), ")");
  }
  const MtpWeights& mtp = weights_.mtp[static_cast<size_t>(mtp_index)];
  const int64_t hidden = c.hidden_size;
  const int64_t hc = c.hc_mult;
  Rows rows;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const MtpChunk& chunk = chunks[i];
    validate_chunk(c, kv_layout(), chunk.next_tokens, chunk.start_pos, chunk.blocks, chunk.num_logits, i);
    const int64_t size = static_cast<int64_t>(chunk.next_tokens.size());
    if (static_cast<int64_t>(chunk.hidden.size()) != size * hc * hidden) {
      fail("MTP chunk ", i, ": hidden has ", chunk.hidden.size(), " values, expected ", size * hc * hidden);
    }
    rows.chunks.push_back({rows.count, size, chunk.start_pos, chunk.blocks});
    rows.tokens.insert(rows.tokens.end(), chunk.next_tokens.begin(), chunk.next_tokens.end());
    for (int64_t r = size - chunk.num_logits; r < size; ++r) rows.logit_rows.push_back(rows.count + r);
    rows.count += size;
  }
  const float eps = static_cast<float>(c.rms_norm_eps);
  // x_j = e_proj(RMSNorm_e(embed(next token))) + h_proj(RMSNorm_h(stream_j)).
  std::vector<float> e(static_cast<size_t>(rows.count * hidden));
  cpu::embedding(weights_.embed, rows.tokens, e.data());
  for (int64_t r = 0; r < rows.count; ++r) cpu::rms_norm(&e[static_cast<size_t>(r * hidden)], mtp.enorm.data(), static_cast<size_t>(hidden), eps, &e[static_cast<size_t>(r * hidden)]);
  std::vector<float> h;
  for (const MtpChunk& chunk : chunks) h.insert(h.end(), chunk.hidden.begin(), chunk.hidden.end());
  for (int64_t s = 0; s < rows.count * hc; ++s) cpu::rms_norm(&h[static_cast<size_t>(s * hidden)], mtp.hnorm.data(), static_cast<size_t>(hidden), eps, &h[static_cast<size_t>(s * hidden)]);
  std::vector<float> e_projected(static_cast<size_t>(rows.count * hidden));
  cpu::linear(mtp.e_proj, e.data(), rows.count, e_projected.data());
  std::vector<float> streams(static_cast<size_t>(rows.count * hc * hidden));
  cpu::linear(mtp.h_proj, h.data(), rows.count * hc, streams.data());
  for (int64_t r = 0; r < rows.count; ++r) {
    for (int64_t j = 0; j < hc; ++j) {
      float* stream = streams.data() + (r * hc + j) * hidden;
      const float* projected = e_projected.data() + r * hidden;
      for (int64_t i = 0; i < hidden; ++i) stream[i] = projected[i] + stream[i];
    }
  }
  run_block(mtp.block, rows, streams.data());
  emit_logits(rows, streams.data(), mtp.hc_head, mtp.norm, output, false);
}

}  // namespace longctx

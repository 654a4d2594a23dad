#include "cpu/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/block_quant.h"
#include "common/thread_pool.h"
#include "cpu/cpu_compressor.h"
#include "cpu/cpu_linear.h"
#include "cpu/cpu_ops.h"

namespace longctx::cpu {
namespace {

struct Projections {
  std::vector<float> q_lora;      // [rows, q_lora_rank], normed
  std::vector<float> q;           // [rows, heads * head_dim], normed and roped
  std::vector<float> kv;          // [rows, head_dim], as the cache stores it
  std::vector<float> comp_kv, comp_score;    // [rows, width]
  std::vector<float> index_q;               // [rows, index_heads * index_head_dim]
  std::vector<float> index_weights;         // [rows, index_heads]
  std::vector<float> index_kv, index_score; // [rows, 2 * index_head_dim]
};

// Position of each row of the batch.
std::vector<int64_t> row_positions(std::span<const ChunkView> chunks, int64_t rows) {
  std::vector<int64_t> positions(static_cast<size_t>(rows));
  for (const ChunkView& chunk : chunks) {
    for (int64_t i = 0; i < chunk.rows; ++i) positions[static_cast<size_t>(chunk.first_row + i)] = chunk.start_pos + i;
  }
  return positions;
}

std::vector<float> project(const LinearWeight& w, const float* x, int64_t rows) {
  std::vector<float> y(static_cast<size_t>(rows * w.out));
  linear(w, x, rows, y.data());
  return y;
}

Projections compute_projections(const LayerContext& ctx, const float* x, int64_t rows,
                                const std::vector<int64_t>& positions) {
  const ModelConfig& c = ctx.config;
  const AttentionWeights& w = ctx.weights;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t d = c.head_dim;
  const int64_t nope = c.nope_head_dim();
  Projections p;

  p.q_lora = project(w.wq_a, x, rows);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = p.q_lora.data() + r * c.q_lora_rank;
    rms_norm(row, w.q_norm.data(), static_cast<size_t>(c.q_lora_rank), eps, row);
  }
  p.q = project(w.wq_b, p.q_lora.data(), rows);
  p.kv = project(w.wkv, x, rows);
  ThreadPool::global().parallel_for(static_cast<size_t>(rows), [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r) {
      const int64_t position = positions[r];
      for (int64_t h = 0; h < c.num_attention_heads; ++h) {
        float* head = p.q.data() + (static_cast<int64_t>(r) * c.num_attention_heads + h) * d;
        rms_norm(head, nullptr, static_cast<size_t>(d), eps, head);
        ctx.rope.rotate(head + nope, position, false);
      }
      float* kv = p.kv.data() + static_cast<int64_t>(r) * d;
      rms_norm(kv, w.kv_norm.data(), static_cast<size_t>(d), eps, kv);
      ctx.rope.rotate(kv + nope, position, false);
      fp8_simulate_blocks(kv, static_cast<size_t>(nope), 64);
      ctx.kv_codec.round_trip(kv);
    }
  });

  if (w.compressor) {
    p.comp_kv = project(w.compressor->wkv, x, rows);
    p.comp_score = project(w.compressor->wgate, x, rows);
  }
  if (w.indexer) {
    const IndexerWeights& ix = *w.indexer;
    const int64_t heads = c.index_n_heads;
    const int64_t dim = c.index_head_dim;
    p.index_q = project(ix.wq_b, p.q_lora.data(), rows);
    p.index_weights = project(ix.weights_proj, x, rows);
    p.index_kv = project(ix.compressor.wkv, x, rows);
    p.index_score = project(ix.compressor.wgate, x, rows);
    const float weight_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)) /
                                                  std::sqrt(static_cast<double>(heads)));
    ThreadPool::global().parallel_for(static_cast<size_t>(rows), [&](size_t begin, size_t end) {
      for (size_t r = begin; r < end; ++r) {
        for (int64_t h = 0; h < heads; ++h) {
          float* head = p.index_q.data() + (static_cast<int64_t>(r) * heads + h) * dim;
          ctx.rope.rotate(head + dim - c.qk_rope_head_dim, positions[r], false);
          hadamard_transform(head, static_cast<size_t>(dim));
          fp4_simulate_blocks(head, static_cast<size_t>(dim), 32);
          p.index_weights[r * static_cast<size_t>(heads) + static_cast<size_t>(h)] *= weight_scale;
        }
      }
    });
  }
  return p;
}

// Writes the chunk's raw KV into the window rings; later positions of a ring slot win.
void write_window(const LayerContext& ctx, const ChunkView& chunk, const float* kv) {
  const int64_t d = ctx.config.head_dim;
  for (int64_t i = 0; i < chunk.rows; ++i) {
    const int64_t position = chunk.start_pos + i;
    const int64_t slot = (position % kKvBlockSize) % ctx.kv.window_entries;
    uint8_t* page = ctx.window_page(chunk, position);
    ctx.kv_codec.encode(kv + (chunk.first_row + i) * d, page + static_cast<size_t>(slot) * ctx.kv.kv_entry_bytes);
  }
}

// Gathers the keys of one query: window positions ascending, then compressed entries.
int64_t gather_keys(const LayerContext& ctx, const ChunkView& chunk, int64_t position,
                    const std::vector<float>& chunk_kv, const std::vector<int64_t>& entries,
                    std::vector<float>& keys) {
  const int64_t d = ctx.config.head_dim;
  const int64_t first = std::max<int64_t>(0, position - ctx.config.sliding_window + 1);
  const int64_t count = position - first + 1 + static_cast<int64_t>(entries.size());
  keys.resize(static_cast<size_t>(count * d));
  float* out = keys.data();
  for (int64_t p = first; p <= position; ++p, out += d) {
    if (p >= chunk.start_pos) {
      const float* fresh = chunk_kv.data() + (chunk.first_row + p - chunk.start_pos) * d;
      std::copy(fresh, fresh + d, out);
    } else {
      const int64_t slot = (p % kKvBlockSize) % ctx.kv.window_entries;
      ctx.kv_codec.decode(ctx.window_page(chunk, p) + static_cast<size_t>(slot) * ctx.kv.kv_entry_bytes, out);
    }
  }
  for (const int64_t entry : entries) {
    ctx.kv_codec.decode(ctx.entry_bytes(chunk, entry), out);
    out += d;
  }
  return count;
}

}  // namespace

std::vector<int64_t> select_compressed_entries(const LayerContext& ctx, const ChunkView& chunk,
                                               int64_t position, const float* q_index,
                                               const float* head_weights) {
  const int ratio = ctx.kv.ratio;
  const int64_t visible = ratio > 0 ? (position + 1) / ratio : 0;
  std::vector<int64_t> entries;
  if (visible == 0) return entries;
  if (!ctx.kv.has_indexer) {
    entries.resize(static_cast<size_t>(visible));
    std::iota(entries.begin(), entries.end(), 0);
    return entries;
  }
  const ModelConfig& c = ctx.config;
  const int64_t dim = c.index_head_dim;
  std::vector<float> scores(static_cast<size_t>(visible));
  std::vector<float> key(static_cast<size_t>(dim));
  for (int64_t i = 0; i < visible; ++i) {
    ctx.key_codec.decode(ctx.key_bytes(chunk, i), key.data());
    float score = 0.0f;
    for (int64_t h = 0; h < c.index_n_heads; ++h) {
      score += head_weights[h] * std::max(0.0f, dot(q_index + h * dim, key.data(), static_cast<size_t>(dim)));
    }
    scores[static_cast<size_t>(i)] = score;
  }
  const int64_t k = std::min<int64_t>(c.index_topk, visible);
  entries.resize(static_cast<size_t>(visible));
  std::iota(entries.begin(), entries.end(), 0);
  std::partial_sort(entries.begin(), entries.begin() + k, entries.end(), [&](int64_t a, int64_t b) {
    const float sa = scores[static_cast<size_t>(a)];
    const float sb = scores[static_cast<size_t>(b)];
    return sa != sb ? sa > sb : a < b;
  });
  entries.resize(static_cast<size_t>(k));
  std::sort(entries.begin(), entries.end());
  return entries;
}

void attend(const float* q, const float* keys, int64_t num_keys, const float* sinks,
            int64_t heads, int64_t head_dim, float* out) {
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  std::vector<float> logits(static_cast<size_t>(num_keys));
  for (int64_t h = 0; h < heads; ++h) {
    const float* q_head = q + h * head_dim;
    float max_logit = -INFINITY;
    for (int64_t k = 0; k < num_keys; ++k) {
      const float logit = dot(q_head, keys + k * head_dim, static_cast<size_t>(head_dim)) * scale;
      logits[static_cast<size_t>(k)] = logit;
      max_logit = std::max(max_logit, logit);
    }
    float* o = out + h * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    float denominator = 0.0f;
    for (int64_t k = 0; k < num_keys; ++k) {
      const float weight = std::exp(logits[static_cast<size_t>(k)] - max_logit);
      denominator += weight;
      const float* key = keys + k * head_dim;
      for (int64_t i = 0; i < head_dim; ++i) o[i] += weight * key[i];
    }
    // The sink is one more logit with a zero value: it only enlarges the denominator.
    denominator += std::exp(sinks[h] - max_logit);
    for (int64_t i = 0; i < head_dim; ++i) o[i] /= denominator;
  }
}

void attention_sublayer(const LayerContext& ctx, std::span<const ChunkView> chunks,
                        const float* x, int64_t rows, float* out) {
  const ModelConfig& c = ctx.config;
  const AttentionWeights& w = ctx.weights;
  const int64_t d = c.head_dim;
  const int64_t heads = c.num_attention_heads;
  const std::vector<int64_t> positions = row_positions(chunks, rows);
  Projections p = compute_projections(ctx, x, rows, positions);

  if (w.compressor) {
    ThreadPool::global().parallel_for(chunks.size(), [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) {
        run_compressors(ctx, chunks[i], p.comp_kv.data(), p.comp_score.data(),
                        w.indexer ? p.index_kv.data() : nullptr,
                        w.indexer ? p.index_score.data() : nullptr);
      }
    });
  }

  std::vector<float> attended(static_cast<size_t>(rows * heads * d));
  std::vector<int64_t> row_chunk(static_cast<size_t>(rows));
  for (size_t i = 0; i < chunks.size(); ++i) {
    for (int64_t r = 0; r < chunks[i].rows; ++r) row_chunk[static_cast<size_t>(chunks[i].first_row + r)] = static_cast<int64_t>(i);
  }
  ThreadPool::global().parallel_for(static_cast<size_t>(rows), [&](size_t begin, size_t end) {
    std::vector<float> keys;
    for (size_t r = begin; r < end; ++r) {
      const ChunkView& chunk = chunks[static_cast<size_t>(row_chunk[r])];
      const int64_t position = positions[r];
      const std::vector<int64_t> entries = select_compressed_entries(
          ctx, chunk, position,
          w.indexer ? p.index_q.data() + r * static_cast<size_t>(c.index_n_heads * c.index_head_dim) : nullptr,
          w.indexer ? p.index_weights.data() + r * static_cast<size_t>(c.index_n_heads) : nullptr);
      const int64_t num_keys = gather_keys(ctx, chunk, position, p.kv, entries, keys);
      float* o = attended.data() + r * static_cast<size_t>(heads * d);
      attend(p.q.data() + r * static_cast<size_t>(heads * d), keys.data(), num_keys,
             w.attn_sink.data(), heads, d, o);
      for (int64_t h = 0; h < heads; ++h) ctx.rope.rotate(o + h * d + c.nope_head_dim(), position, true);
    }
  });
  for (const ChunkView& chunk : chunks) write_window(ctx, chunk, p.kv.data());

  std::vector<float> low_rank(static_cast<size_t>(rows * c.o_groups * c.o_lora_rank));
  linear_grouped(w.wo_a, c.o_groups, attended.data(), rows, low_rank.data());
  linear(w.wo_b, low_rank.data(), rows, out);
}

}  // namespace longctx::cpu

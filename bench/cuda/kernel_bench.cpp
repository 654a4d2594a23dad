// longctx bench kernels: each hot kernel of the V4 forward at the layer shapes of V4-Flash and
// V4-Pro, against the device's roofline. Bytes are the fewest the launch must move (each input
// read once, each output written once: weights and scales, the KV bytes a decode row must read,
// fp32 activations in and out); FLOPs are by formula (2 per multiply-add). Inputs are random and
// made on the device; the L2 is flushed before every timed call.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench_util.h"
#include "cuda/cuda_check.h"
#include "cuda/gemm_bf16_split.h"
#include "cuda/gemm_bf16_tc.h"
#include "cuda/gemm_fp8_tc.h"
#include "cuda/kernels.h"
#include "cuda/kv_view.h"
#include "cuda/sampling.h"
#include "engine/sampler.h"
#include "cuda_bench.h"
#include "kv/kv_layout.h"
#include "longctx/error.h"
#include "model/rope.h"
#include "model/test_model.h"

namespace longctx::bench {
namespace {

using namespace longctx::cuda;  // NOLINT: the kernels' namespace

DeviceBuffer<float> random_floats(size_t count, uint64_t seed, float stddev = 1.0f) {
  DeviceBuffer<float> buffer(count);
  fill_floats_random(buffer.data(), static_cast<int64_t>(count), 0.0f, stddev, seed, nullptr);
  return buffer;
}

size_t weight_bytes(int format, int64_t out, int64_t in) {
  const size_t n = static_cast<size_t>(out * in);
  switch (format) {
    case kWeightBF16:
      return 2 * n;
    case kWeightFP8:
      return n;
    default:
      return n / 2;
  }
}
size_t scale_bytes(int format, int64_t out, int64_t in) {
  switch (format) {
    case kWeightBF16:
      return 0;
    case kWeightFP8:
      return static_cast<size_t>(((out + 127) / 128) * ((in + 127) / 128));
    default:
      return static_cast<size_t>(out * (in / 32));
  }
}

// `groups` stacked matrices made on the device in their stored format.
struct DeviceMatrix {
  DeviceBuffer<uint8_t> weight, scale;
  LinearView view;
  size_t bytes_per_group = 0;

  DeviceMatrix(int format, int64_t out, int64_t in, int64_t groups, uint64_t seed) {
    const size_t w = weight_bytes(format, out, in), s = scale_bytes(format, out, in);
    weight.resize(w * static_cast<size_t>(groups));
    if (s > 0) scale.resize(s * static_cast<size_t>(groups));
    fill_linear_random(weight.data(), scale.data(), format, out, in, groups,
                       1.0f / std::sqrt(static_cast<float>(in)), seed, nullptr);
    view = {weight.data(),           scale.data(),           format, out, in,
            static_cast<int64_t>(w), static_cast<int64_t>(s)};
    bytes_per_group = w + s;
  }
};

// Block tables of sequence i (chunk i of the batch), appended to `tables` (whose offsets start
// after chunk_ints of ChunkInfo): its window blocks alternate between pages 2i and 2i + 1, and in
// each of the two compressed pools it owns pages [i blocks, (i + 1) blocks).
void append_tables(ChunkInfo& info, int64_t i, int64_t blocks, size_t chunk_ints, std::vector<int32_t>& tables) {
  info.window_table = static_cast<int32_t>(chunk_ints + tables.size());
  info.window_blocks = static_cast<int32_t>(blocks);
  for (int64_t b = 0; b < blocks; ++b)
    tables.push_back(static_cast<int32_t>(2 * i + b % 2));
  for (int pool = 0; pool < 2; ++pool) {
    info.compressed_table[pool] = static_cast<int32_t>(chunk_ints + tables.size());
    info.compressed_blocks[pool] = static_cast<int32_t>(blocks);
    for (int64_t b = 0; b < blocks; ++b)
      tables.push_back(static_cast<int32_t>(i * blocks + b));
  }
}

std::string model_tag(const std::string& model) {
  return model == "pro" ? "Pro" : "Flash";
}

std::string context_tag(int64_t context) {
  if (context % (1 << 20) == 0) return std::to_string(context >> 20) + "M";
  if (context % 1024 == 0) return std::to_string(context >> 10) + "K";
  return std::to_string(context);
}

class KernelBench {
 public:
  explicit KernelBench(const KernelBenchOptions& options)
      : options_(options),
        peaks_(query_device(options.device)),
        timer_(peaks_, options.max_repeats, options.budget_ms),
        table_(peaks_),
        partial_(size_t{16} << 20),  // the backend's split-K scratch
        workspace_{partial_.data(), partial_.size(), peaks_.sm_count} {}

  bool wants(const std::string& family) const {
    return options_.only.empty() ||
           std::find(options_.only.begin(), options_.only.end(), family) != options_.only.end();
  }

  int run() {
    std::printf("%s", describe(peaks_).c_str());
    std::printf(
        "KV cache: entries %s, indexer keys %s; times are medians of CUDA events, L2 flushed "
        "before each\n",
        to_string(options_.kv_dtype), to_string(options_.key_dtype));
    if (wants("attention") || wants("indexer")) {
      for (const int64_t context : options_.contexts)
        attention_and_indexer(context);
    }
    if (wants("indexer")) {
      for (const int64_t context : options_.contexts)
        if (context >= 131072) indexer_prefill(context);
    }
    if (wants("compressor")) compressor();
    if (wants("gemm")) {
      for (const std::string& model : options_.models)
        gemm(model);
    }
    if (wants("fp8in")) {
      for (const std::string& model : options_.models)
        fp8_inputs(model);
    }
    if (wants("moe")) {
      for (const std::string& model : options_.models)
        moe(model);
      for (const std::string& model : options_.models)
        moe_prefill(model);
      for (const std::string& model : options_.models)
        moe_prefill_all_experts(model);
    }
    if (wants("hc")) hyper_connections();
    if (wants("sampling")) sampling();
    if (!options_.csv_path.empty()) {
      table_.write_csv(options_.csv_path);
      std::printf("\nwrote %s\n", options_.csv_path.c_str());
    }
    return 0;
  }

 private:
  // One c4 (with indexer) and one c128 layer of the V4 attention shapes (the same for Flash and
  // Pro: head_dim 512, rope 64, indexer 64 heads x 128).
  KvLayout attention_layout() const {
    ModelConfig c = test_model_preset("flash", 2);
    c.num_nextn_predict_layers = 0;
    c.compress_ratios = {4, 128};
    return make_kv_layout(c, {options_.kv_dtype, options_.key_dtype});
  }

  // Sparse attention decode and the indexer at one context: every sequence of the largest batch
  // has its own pages (filled with random entries); smaller batches use the first sequences.
  void attention_and_indexer(int64_t context) {
    const KvLayout layout = attention_layout();
    const int64_t max_batch = *std::max_element(options_.batches.begin(), options_.batches.end());
    const int64_t blocks = (context + kKvBlockSize - 1) / kKvBlockSize;
    const LayerKvLayout& l4 = layout.layers[0];
    const LayerKvLayout& l128 = layout.layers[1];
    const int64_t window_pages = 2 * max_batch;
    const int64_t compressed_pages = blocks * max_batch;
    DeviceBuffer<uint8_t> window4(static_cast<size_t>(window_pages) * l4.window_page_bytes);
    DeviceBuffer<uint8_t> window128(static_cast<size_t>(window_pages) * l128.window_page_bytes);
    DeviceBuffer<uint8_t> pages4(static_cast<size_t>(compressed_pages) * l4.compressed_page_bytes);
    DeviceBuffer<uint8_t> pages128(static_cast<size_t>(compressed_pages) *
                                   l128.compressed_page_bytes);
    const KvLayerView kv4 = make_kv_layer_view(layout, 0, window4.data(), pages4.data());
    const KvLayerView kv128 = make_kv_layer_view(layout, 1, window128.data(), pages128.data());
    fill_kv_pages_random(kv4, window_pages, compressed_pages, 11, nullptr);
    fill_kv_pages_random(kv128, window_pages, compressed_pages, 12, nullptr);

    // Sequence i: one decode row at position context - 1; window block b -> page 2i + b % 2,
    // compressed block b -> page i * blocks + b in both pools.
    std::vector<ChunkInfo> infos(static_cast<size_t>(max_batch));
    std::vector<int32_t> tables;
    const size_t chunk_ints = infos.size() * sizeof(ChunkInfo) / sizeof(int32_t);
    const int32_t pos = static_cast<int32_t>(context - 1);
    for (int64_t i = 0; i < max_batch; ++i) {
      ChunkInfo& info = infos[static_cast<size_t>(i)];
      info.first_row = static_cast<int32_t>(i);
      info.rows = 1;
      info.start_pos = pos;
      append_tables(info, i, blocks, chunk_ints, tables);
    }
    std::vector<int32_t> meta(chunk_ints);
    std::memcpy(meta.data(), infos.data(), infos.size() * sizeof(ChunkInfo));
    meta.insert(meta.end(), tables.begin(), tables.end());
    const size_t positions_at = meta.size();
    for (int64_t i = 0; i < max_batch; ++i)
      meta.push_back(pos);
    const size_t row_chunk_at = meta.size();
    for (int64_t i = 0; i < max_batch; ++i)
      meta.push_back(static_cast<int32_t>(i));
    const DeviceBuffer<int32_t> device_meta = to_device(meta);
    const auto batch_view = [&](int64_t batch) {
      return BatchView{reinterpret_cast<const ChunkInfo*>(device_meta.data()),
                       static_cast<int>(batch),
                       device_meta.data(),
                       device_meta.data() + positions_at,
                       device_meta.data() + row_chunk_at,
                       batch};
    };

    const ModelConfig flash = test_model_preset("flash", 4);
    const DeviceBuffer<float> inv_freq =
        to_device(RopeTable::for_layer(flash, 4).inverse_frequencies());
    const int64_t visible4 = (context) / 4;  // entries a row at position context - 1 sees
    const int64_t visible128 = context / 128;
    const double entry = static_cast<double>(l4.kv_entry_bytes);
    const int d = static_cast<int>(flash.head_dim);
    DeviceBuffer<float> workspace(size_t{64} << 20);  // the backend's attention workspace
    std::mt19937_64 random(static_cast<uint64_t>(context));

    for (const std::string& model : options_.models) {
      const ModelConfig c = test_model_preset(model, 4);
      const int heads = static_cast<int>(c.num_attention_heads);
      const int topk = static_cast<int>(c.index_topk);
      if (wants("attention")) {
        table_.section("sparse-attention decode, " + model_tag(model) + " (" +
                       std::to_string(heads) + " heads x 512, window 128, top-" +
                       std::to_string(topk) + "), context " + context_tag(context));
        const DeviceBuffer<float> q = random_floats(static_cast<size_t>(max_batch * heads * d), 21);
        const DeviceBuffer<float> fresh = random_floats(static_cast<size_t>(max_batch * d), 22);
        const DeviceBuffer<float> sinks = random_floats(static_cast<size_t>(heads), 23);
        DeviceBuffer<float> out(static_cast<size_t>(max_batch * heads * d));
        // Each row selects top-k distinct entries spread over its whole context, ascending.
        std::vector<int32_t> selected(static_cast<size_t>(max_batch * topk));
        for (int64_t i = 0; i < max_batch; ++i) {
          std::set<int32_t> picks;
          std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(visible4 - 1));
          while (static_cast<int64_t>(picks.size()) < std::min<int64_t>(topk, visible4))
            picks.insert(pick(random));
          std::copy(picks.begin(), picks.end(), selected.begin() + i * topk);
        }
        const DeviceBuffer<int32_t> device_selected = to_device(selected);
        const DeviceBuffer<int32_t> counts = to_device(
            std::vector<int32_t>(static_cast<size_t>(max_batch),
                                 static_cast<int32_t>(std::min<int64_t>(topk, visible4))));
        const double q_out_bytes = 2.0 * heads * d * 4.0;
        // Both kernels: the fp32 one (batch-invariant mode, and every step below the fast
        // mode's row threshold) and the tensor-core one.
        for (const bool tc : {false, true}) {
          if (tc && !sparse_attention_tc_supported(kv4)) continue;
          const auto attend = tc ? sparse_attention_tc : sparse_attention;
          const std::string path = tc ? " tensor-core" : "";
          for (const int64_t batch : options_.batches) {
            const BatchView view = batch_view(batch);
            const int64_t keys4 = 128 + std::min<int64_t>(topk, visible4);
            double ms = timer_.median_ms([&] {
              attend(kv4, view, q.data(), fresh.data(), sinks.data(), device_selected.data(),
                     counts.data(), topk, heads, 128, keys4, inv_freq.data(), out.data(),
                     workspace.data(), workspace.size(), nullptr);
            });
            table_.add("attention",
                       model_tag(model) + " c4 top-" + std::to_string(topk) + " ctx " +
                           context_tag(context) + " batch " + std::to_string(batch) + " (" +
                           std::to_string(keys4) + " keys)" + path,
                       ms,
                       static_cast<double>(batch) * (static_cast<double>(keys4) * entry + q_out_bytes),
                       static_cast<double>(batch) * 4.0 * heads * d * static_cast<double>(keys4),
                       Peak::kBF16);
            const int64_t keys128 = 128 + visible128;
            ms = timer_.median_ms([&] {
              attend(kv128, view, q.data(), fresh.data(), sinks.data(), nullptr, counts.data(),
                     topk, heads, 128, keys128, inv_freq.data(), out.data(), workspace.data(),
                     workspace.size(), nullptr);
            });
            table_.add("attention",
                       model_tag(model) + " c128 all ctx " + context_tag(context) + " batch " +
                           std::to_string(batch) + " (" + std::to_string(keys128) + " keys)" + path,
                       ms,
                       static_cast<double>(batch) * (static_cast<double>(keys128) * entry + q_out_bytes),
                       static_cast<double>(batch) * 4.0 * heads * d * static_cast<double>(keys128),
                       Peak::kBF16);
          }
        }
        attention_prefill(model, context, kv4, kv128, meta, infos.front(), entry);
      }
      if (wants("indexer")) {
        const int index_heads = static_cast<int>(c.index_n_heads);
        const int index_dim = static_cast<int>(c.index_head_dim);
        table_.section("indexer scores + top-" + std::to_string(topk) + ", " + model_tag(model) +
                       " (" + std::to_string(index_heads) + " heads x " +
                       std::to_string(index_dim) + ", " + to_string(options_.key_dtype) +
                       " keys), context " + context_tag(context) + " (" + std::to_string(visible4) +
                       " entries)");
        // Queries as the model makes them: roped, Hadamard-rotated, fp4-simulated.
        DeviceBuffer<float> q =
            random_floats(static_cast<size_t>(max_batch * index_heads * index_dim), 31);
        DeviceBuffer<float> weights =
            random_floats(static_cast<size_t>(max_batch * index_heads), 32);
        indexer_q_prepare(q.data(), weights.data(), max_batch, index_heads, index_dim, 64,
                          batch_view(max_batch).row_pos, inv_freq.data(), 1.0f, nullptr);
        DeviceBuffer<uint8_t> index_workspace(indexer_workspace_bytes(max_batch));
        DeviceBuffer<uint8_t> topk_workspace(topk_workspace_bytes(max_batch, visible4));
        DeviceBuffer<float> scores(static_cast<size_t>(max_batch * visible4));
        DeviceBuffer<int32_t> selected(static_cast<size_t>(max_batch * topk)),
            counts(static_cast<size_t>(max_batch));
        const double key_bytes = static_cast<double>(l4.indexer_key_bytes);
        for (const int64_t batch : options_.batches) {
          const BatchView view = batch_view(batch);
          const double rows = static_cast<double>(batch);
          const double score_ms = timer_.median_ms([&] {
            indexer_scores(kv4, view, 0, batch, q.data(), weights.data(), index_heads, index_dim,
                           scores.data(), visible4, visible4, nullptr, index_workspace.data());
          });
          const double score_bytes = rows * (static_cast<double>(visible4) * (key_bytes + 4.0) +
                                             (index_heads * index_dim + index_heads) * 4.0);
          const double score_flops =
              rows * 2.0 * index_heads * index_dim * static_cast<double>(visible4);
          table_.add("indexer",
                     model_tag(model) + " scores ctx " + context_tag(context) + " batch " +
                         std::to_string(batch),
                     score_ms, score_bytes, score_flops, Peak::kBF16);
          const double topk_ms = timer_.median_ms([&] {
            topk_rows(scores.data(), visible4, view.row_pos, 0, batch, 4, topk, selected.data(),
                      counts.data(), nullptr, topk_workspace.data());
          });
          const double topk_bytes = rows * (static_cast<double>(visible4) * 4.0 + topk * 4.0);
          table_.add("indexer",
                     model_tag(model) + " top-" + std::to_string(topk) + " ctx " +
                         context_tag(context) + " batch " + std::to_string(batch),
                     topk_ms, topk_bytes, 0, Peak::kNone);
          const double both_ms = timer_.median_ms([&] {
            indexer_scores(kv4, view, 0, batch, q.data(), weights.data(), index_heads, index_dim,
                           scores.data(), visible4, visible4, nullptr, index_workspace.data());
            topk_rows(scores.data(), visible4, view.row_pos, 0, batch, 4, topk, selected.data(),
                      counts.data(), nullptr, topk_workspace.data());
          });
          // Fused, the pair would read the keys once and write only the selection.
          table_.add("indexer",
                     model_tag(model) + " scores+top-k ctx " + context_tag(context) + " batch " +
                         std::to_string(batch),
                     both_ms,
                     rows * (static_cast<double>(visible4) * key_bytes + topk * 4.0 +
                             index_heads * (index_dim + 1) * 4.0),
                     score_flops, Peak::kBF16);
        }
      }
    }
  }

  // Sparse attention of one prefill chunk of 2048 rows ending at `context` (sequence 0's pages),
  // c4 (top-k selections) and c128 (all visible entries), on the fp32 kernel and on the tensor
  // cores (the fast mode's path). FLOPs: 4 heads d per (row, key); bytes: q and out, the fresh
  // kv, and each key entry the chunk reads once.
  void attention_prefill(const std::string& model, int64_t context, const KvLayerView& kv4,
                         const KvLayerView& kv128, const std::vector<int32_t>& decode_meta,
                         const ChunkInfo& sequence0, double entry) {
    const int64_t rows = std::min<int64_t>(2048, context);
    const ModelConfig c = test_model_preset(model, 4);
    const int heads = static_cast<int>(c.num_attention_heads);
    const int topk = static_cast<int>(c.index_topk);
    const int d = static_cast<int>(c.head_dim);
    const int32_t start = static_cast<int32_t>(context - rows);
    // The decode meta (its tables) with chunk 0 replaced by the prefill chunk.
    std::vector<int32_t> meta = decode_meta;
    ChunkInfo info = sequence0;
    info.first_row = 0;
    info.rows = static_cast<int32_t>(rows);
    info.start_pos = start;
    std::memcpy(meta.data(), &info, sizeof(info));
    const size_t positions_at = meta.size();
    for (int64_t r = 0; r < rows; ++r)
      meta.push_back(static_cast<int32_t>(start + r));
    const size_t row_chunk_at = meta.size();
    meta.insert(meta.end(), static_cast<size_t>(rows), 0);
    const DeviceBuffer<int32_t> device_meta = to_device(meta);
    const BatchView view{reinterpret_cast<const ChunkInfo*>(device_meta.data()), 1,
                         device_meta.data(), device_meta.data() + positions_at,
                         device_meta.data() + row_chunk_at, rows};

    const DeviceBuffer<float> q = random_floats(static_cast<size_t>(rows * heads * d), 41);
    const DeviceBuffer<float> fresh = random_floats(static_cast<size_t>(rows * d), 42);
    const DeviceBuffer<float> sinks = random_floats(static_cast<size_t>(heads), 43);
    DeviceBuffer<float> out(static_cast<size_t>(rows * heads * d));
    DeviceBuffer<float> workspace(size_t{64} << 20);  // the backend's attention workspace
    const DeviceBuffer<float> inv_freq =
        to_device(RopeTable::for_layer(test_model_preset("flash", 4), 4).inverse_frequencies());
    // Selections: top-k distinct entries spread over each row's visible ones, ascending.
    std::mt19937_64 random(static_cast<uint64_t>(context) + 7);
    std::vector<int32_t> selected(static_cast<size_t>(rows * topk)), counts(static_cast<size_t>(rows));
    double flops4 = 0, flops128 = 0, union4 = 0;
    int64_t max_keys4 = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = start + r;
      const int64_t visible = (pos + 1) / 4;
      const int64_t k = std::min<int64_t>(topk, visible);
      std::set<int32_t> picks;
      std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(std::max<int64_t>(visible - 1, 0)));
      while (static_cast<int64_t>(picks.size()) < k)
        picks.insert(pick(random));
      std::copy(picks.begin(), picks.end(), selected.begin() + r * topk);
      counts[static_cast<size_t>(r)] = static_cast<int32_t>(k);
      const int64_t window = std::min<int64_t>(128, pos + 1);
      max_keys4 = std::max(max_keys4, window + k);
      flops4 += 4.0 * heads * d * static_cast<double>(window + k);
      flops128 += 4.0 * heads * d * static_cast<double>(window + (pos + 1) / 128);
    }
    union4 = std::min(static_cast<double>(rows) * topk, static_cast<double>(context / 4));
    const DeviceBuffer<int32_t> device_selected = to_device(selected);
    const DeviceBuffer<int32_t> device_counts = to_device(counts);
    const int64_t max_keys128 = std::min<int64_t>(128, context) + context / 128;
    const double io = static_cast<double>(rows) * (2.0 * heads * d * 4.0 + d * 4.0);
    table_.section("sparse-attention prefill, " + model_tag(model) + " (" + std::to_string(heads) +
                   " heads x 512, window 128, top-" + std::to_string(topk) + "), chunk of " +
                   std::to_string(rows) + " rows ending at " + context_tag(context));
    for (const bool tc : {false, true}) {
      if (tc && !sparse_attention_tc_supported(kv4)) continue;  // fp32 pages: no fast path
      const auto attend = tc ? sparse_attention_tc : sparse_attention;
      const std::string path = tc ? " tensor-core" : " fp32";
      double ms = timer_.median_ms([&] {
        attend(kv4, view, q.data(), fresh.data(), sinks.data(), device_selected.data(),
               device_counts.data(), topk, heads, 128, max_keys4, inv_freq.data(), out.data(),
               workspace.data(), workspace.size(), nullptr);
      });
      table_.add("attention",
                 model_tag(model) + " prefill c4 top-" + std::to_string(topk) + " ctx " +
                     context_tag(context) + " rows " + std::to_string(rows) + path,
                 ms, io + union4 * entry, flops4, Peak::kBF16);
      ms = timer_.median_ms([&] {
        attend(kv128, view, q.data(), fresh.data(), sinks.data(), nullptr, device_counts.data(),
               topk, heads, 128, max_keys128, inv_freq.data(), out.data(), workspace.data(),
               workspace.size(), nullptr);
      });
      table_.add("attention",
                 model_tag(model) + " prefill c128 all ctx " + context_tag(context) + " rows " +
                     std::to_string(rows) + path,
                 ms, io + static_cast<double>(context / 128) * entry, flops128, Peak::kBF16);
    }
  }

  // The indexer of a prefill chunk: the last `rows` positions of a `context`-token prompt (one
  // sequence; causal, row i sees (pos + 1) / 4 entries), scores in slices of <= 64M floats as
  // the backend computes them, then top-k. One timed run after a warm-up slice (these take up to
  // seconds). LONGCTX_INDEXER_OLD=1 times the fp32 kernels (cases over 2e14 FLOPs skipped).
  void indexer_prefill(int64_t context) {
    const KvLayout layout = attention_layout();
    const LayerKvLayout& l4 = layout.layers[0];
    const int64_t blocks = (context + kKvBlockSize - 1) / kKvBlockSize;
    DeviceBuffer<uint8_t> window4(static_cast<size_t>(l4.window_page_bytes));
    DeviceBuffer<uint8_t> pages4(static_cast<size_t>(blocks) * l4.compressed_page_bytes);
    const KvLayerView kv4 = make_kv_layer_view(layout, 0, window4.data(), pages4.data());
    fill_kv_pages_random(kv4, 1, blocks, 13, nullptr);
    const ModelConfig flash = test_model_preset("flash", 4);
    const DeviceBuffer<float> inv_freq = to_device(RopeTable::for_layer(flash, 4).inverse_frequencies());
    const int heads = static_cast<int>(flash.index_n_heads);
    const int dim = static_cast<int>(flash.index_head_dim);
    const int topk = static_cast<int>(flash.index_topk);
    const char* old_env = std::getenv("LONGCTX_INDEXER_OLD");
    const bool old = old_env != nullptr && old_env[0] == '1';
    for (const int64_t rows : {int64_t{2048}, int64_t{8192}}) {
      if (rows > context) continue;
      const char* max_env = std::getenv("LONGCTX_BENCH_PREFILL_MAX_ROWS");  // short device runs
      if (max_env != nullptr && rows > std::atoll(max_env)) continue;
      std::vector<int32_t> meta(sizeof(ChunkInfo) / sizeof(int32_t));
      ChunkInfo info;
      info.first_row = 0;
      info.rows = static_cast<int32_t>(rows);
      info.start_pos = static_cast<int32_t>(context - rows);
      info.window_table = static_cast<int32_t>(meta.size());
      info.window_blocks = 1;
      meta.push_back(0);
      info.compressed_table[0] = static_cast<int32_t>(meta.size());
      info.compressed_blocks[0] = static_cast<int32_t>(blocks);
      for (int64_t b = 0; b < blocks; ++b) meta.push_back(static_cast<int32_t>((b * 7) % blocks));
      std::memcpy(meta.data(), &info, sizeof(info));
      const size_t positions_at = meta.size();
      for (int64_t r = 0; r < rows; ++r) meta.push_back(static_cast<int32_t>(context - rows + r));
      const size_t chunk_at = meta.size();
      for (int64_t r = 0; r < rows; ++r) meta.push_back(0);
      const DeviceBuffer<int32_t> device_meta = to_device(meta);
      const BatchView view{reinterpret_cast<const ChunkInfo*>(device_meta.data()), 1, device_meta.data(),
                           device_meta.data() + positions_at, device_meta.data() + chunk_at, rows};
      DeviceBuffer<float> q = random_floats(static_cast<size_t>(rows * heads * dim), 41);
      DeviceBuffer<float> weights = random_floats(static_cast<size_t>(rows * heads), 42);
      indexer_q_prepare(q.data(), weights.data(), rows, heads, dim, 64, view.row_pos, inv_freq.data(), 1.0f, nullptr);
      const int64_t max_visible = context / 4;
      const int64_t slice = std::max<int64_t>(1, std::min<int64_t>(rows, (int64_t{64} << 20) / max_visible));
      DeviceBuffer<float> scores(static_cast<size_t>(slice * max_visible));
      DeviceBuffer<uint8_t> workspace(indexer_workspace_bytes(slice));
      DeviceBuffer<int32_t> selected(static_cast<size_t>(rows * topk)), counts(static_cast<size_t>(rows));
      double entries = 0;
      for (int64_t r = 0; r < rows; ++r) entries += static_cast<double>((context - rows + r + 1) / 4);
      const double flops = 2.0 * heads * dim * entries;
      const std::string what = "Flash prefill " + std::to_string(rows) + " rows ctx " + context_tag(context);
      if (old && flops > 2e14) {
        std::printf("  %s: skipped with the fp32 kernels (%.3g FLOPs)\n", what.c_str(), flops);
        continue;
      }
      const auto run = [&](bool do_scores, bool do_topk, int64_t row_limit) {
        for (int64_t begin = 0; begin < row_limit; begin += slice) {
          const int64_t count = std::min(slice, row_limit - begin);
          if (do_scores)
            indexer_scores(kv4, view, begin, count, q.data(), weights.data(), heads, dim, scores.data(), max_visible,
                           max_visible, nullptr, workspace.data());
          if (do_topk)
            topk_rows(scores.data(), max_visible, view.row_pos, begin, count, 4, topk,
                      selected.data() + begin * topk, counts.data() + begin, nullptr);
        }
      };
      const auto time_once = [&](bool do_scores, bool do_topk) {
        run(do_scores, do_topk, std::min(rows, slice));  // warm-up: one slice
        cudaEvent_t start, stop;
        LONGCTX_CUDA_CHECK(cudaEventCreate(&start));
        LONGCTX_CUDA_CHECK(cudaEventCreate(&stop));
        LONGCTX_CUDA_CHECK(cudaEventRecord(start));
        run(do_scores, do_topk, rows);
        LONGCTX_CUDA_CHECK(cudaEventRecord(stop));
        LONGCTX_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        LONGCTX_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        LONGCTX_CUDA_CHECK(cudaEventDestroy(start));
        LONGCTX_CUDA_CHECK(cudaEventDestroy(stop));
        return static_cast<double>(ms);
      };
      table_.section("indexer prefill, Flash (" + std::to_string(heads) + " heads x " + std::to_string(dim) + ", " +
                     to_string(options_.key_dtype) + " keys, top-" + std::to_string(topk) + "), " +
                     std::to_string(rows) + " rows ending at context " + context_tag(context) + ", slices of " +
                     std::to_string(slice) + " rows");
      const double key_bytes = static_cast<double>(l4.indexer_key_bytes);
      const double score_ms = time_once(true, false);
      table_.add("indexer", what + " scores", score_ms, entries * (key_bytes + 4.0), flops, Peak::kFP8);
      const double topk_ms = time_once(false, true);
      table_.add("indexer", what + " top-" + std::to_string(topk), topk_ms, entries * 4.0, 0, Peak::kNone);
    }
  }

  // The compressors of a c4 layer (main 512 + indexer 128 channels, overlapping) and a c128
  // layer: decode rows (one per sequence, each completing an entry) and prefill chunks (4096 and
  // 8192 rows; 8192 also through the sequential walk, the path of decode steps).
  void compressor() {
    const KvLayout layout = attention_layout();
    const ModelConfig c = test_model_preset("flash", 4);
    const int64_t max_batch = *std::max_element(options_.batches.begin(), options_.batches.end());
    const int64_t prefill_rows = 8192;
    const int64_t context = 16384;
    const int64_t blocks = context / kKvBlockSize;
    table_.section(
        "compressors (state in the window pages; entries finished, roped, quantized, stored)");
    for (int layer = 0; layer < 2; ++layer) {
      const LayerKvLayout& l = layout.layers[static_cast<size_t>(layer)];
      const int64_t window_pages = 2 * max_batch;
      const int64_t compressed_pages = blocks * max_batch;
      DeviceBuffer<uint8_t> window(static_cast<size_t>(window_pages) * l.window_page_bytes);
      DeviceBuffer<uint8_t> pages(static_cast<size_t>(compressed_pages) * l.compressed_page_bytes);
      const KvLayerView kv = make_kv_layer_view(layout, layer, window.data(), pages.data());
      fill_kv_pages_random(kv, window_pages, compressed_pages, 41, nullptr);
      const int ratio = l.ratio;
      const bool overlap = ratio == 4;
      const int main_channels = static_cast<int>(c.head_dim);
      const int index_channels = static_cast<int>(c.index_head_dim);
      const int main_width = (overlap ? 2 : 1) * main_channels;
      const int index_width = 2 * index_channels;
      const int64_t max_rows = std::max(max_batch, prefill_rows);
      const DeviceBuffer<float> main_kv =
          random_floats(static_cast<size_t>(max_rows * main_width), 42);
      const DeviceBuffer<float> main_score =
          random_floats(static_cast<size_t>(max_rows * main_width), 43);
      const DeviceBuffer<float> index_kv =
          random_floats(static_cast<size_t>(max_rows * index_width), 44);
      const DeviceBuffer<float> index_score =
          random_floats(static_cast<size_t>(max_rows * index_width), 45);
      const DeviceBuffer<float> main_ape =
          random_floats(static_cast<size_t>(ratio * main_width), 46);
      const DeviceBuffer<float> index_ape =
          random_floats(static_cast<size_t>(ratio * index_width), 47);
      const DeviceBuffer<float> main_norm = random_floats(static_cast<size_t>(main_channels), 48);
      const DeviceBuffer<float> index_norm = random_floats(static_cast<size_t>(index_channels), 49);
      const DeviceBuffer<float> inv_freq =
          to_device(RopeTable::for_layer(c, ratio).inverse_frequencies());
      const CompressorView main_view{main_ape.data(), main_norm.data(), ratio, overlap ? 1 : 0,
                                     main_channels};
      const CompressorView index_view{index_ape.data(), index_norm.data(), ratio, 1,
                                      index_channels};
      const CompressorView* index = l.has_indexer ? &index_view : nullptr;
      const double state_bytes = static_cast<double>(l.state_floats) * 4.0;
      const double input_bytes_per_row =
          4.0 * 2.0 * (main_width + (l.has_indexer ? index_width : 0));
      const double entry_bytes = static_cast<double>(l.kv_entry_bytes + l.indexer_key_bytes);

      // rows: one chunk per sequence (decode) or one chunk of prefill_rows (prefill).
      const auto run_case = [&](int64_t chunks, int64_t rows_per_chunk, int32_t start, bool walk) {
        std::vector<ChunkInfo> infos(static_cast<size_t>(chunks));
        const size_t chunk_ints = infos.size() * sizeof(ChunkInfo) / sizeof(int32_t);
        std::vector<int32_t> tables;
        for (int64_t i = 0; i < chunks; ++i) {
          ChunkInfo& info = infos[static_cast<size_t>(i)];
          info.first_row = static_cast<int32_t>(i * rows_per_chunk);
          info.rows = static_cast<int32_t>(rows_per_chunk);
          info.start_pos = start;
          append_tables(info, i, blocks, chunk_ints, tables);
        }
        std::vector<int32_t> meta(chunk_ints);
        std::memcpy(meta.data(), infos.data(), infos.size() * sizeof(ChunkInfo));
        meta.insert(meta.end(), tables.begin(), tables.end());
        const DeviceBuffer<int32_t> device_meta = to_device(meta);
        // The compressor reads only the chunks and tables.
        const BatchView view{reinterpret_cast<const ChunkInfo*>(device_meta.data()),
                             static_cast<int>(chunks),
                             device_meta.data(),
                             nullptr,
                             nullptr,
                             chunks * rows_per_chunk};
        const double ms = timer_.median_ms([&] {
          run_compressors(kv, view, main_view, main_kv.data(), main_score.data(), index,
                          index_kv.data(), index_score.data(), inv_freq.data(), 1e-6f, nullptr,
                          nullptr, 0, 0, walk);
        });
        const double rows = static_cast<double>(chunks * rows_per_chunk);
        const double entries = static_cast<double>(chunks) *
                               std::max<double>(1.0, static_cast<double>(rows_per_chunk / ratio));
        const double bytes = rows * input_bytes_per_row +
                             static_cast<double>(chunks) * 2.0 * state_bytes +
                             entries * entry_bytes;
        const std::string what =
            "c" + std::to_string(ratio) + (l.has_indexer ? "a + indexer" : "a") +
            (rows_per_chunk == 1 ? " decode batch " + std::to_string(chunks)
                                 : " prefill chunk of " + std::to_string(rows_per_chunk)) +
            (walk && rows_per_chunk > 1 ? " (walk)" : "");
        table_.add("compressor", what, ms, bytes, 0, Peak::kNone);
      };
      for (const int64_t batch : options_.batches)
        run_case(batch, 1, static_cast<int32_t>(context - 1), false);
      for (const int64_t rows : {int64_t{4096}, prefill_rows})
        run_case(1, rows, static_cast<int32_t>(context - rows), false);
      run_case(1, prefill_rows, static_cast<int32_t>(context - prefill_rows), true);
    }
  }

  struct GemmShape {
    std::string name;
    int format;
    int64_t out, in;
    int64_t x_group_outputs;  // grouped wo_a: outputs per group (0: plain)
    bool decode_only;         // the head runs on logit rows only
  };

  std::vector<GemmShape> gemm_shapes(const std::string& model) const {
    const ModelConfig c = test_model_preset(model, 4);
    const int64_t hidden = c.hidden_size, heads_d = c.num_attention_heads * c.head_dim;
    return {
        {"wq_a", kWeightFP8, c.q_lora_rank, hidden, 0, false},
        {"wkv", kWeightFP8, c.head_dim, hidden, 0, false},
        {"wq_b", kWeightFP8, heads_d, c.q_lora_rank, 0, false},
        {"indexer wq_b", kWeightFP8, c.index_n_heads * c.index_head_dim, c.q_lora_rank, 0, false},
        {"wo_a (grouped)", kWeightFP8, c.o_groups * c.o_lora_rank, heads_d / c.o_groups,
         c.o_lora_rank, false},
        {"wo_b", kWeightFP8, hidden, c.o_groups * c.o_lora_rank, 0, false},
        {"shared w1/w3", kWeightFP8, c.moe_intermediate_size, hidden, 0, false},
        {"shared w2", kWeightFP8, hidden, c.moe_intermediate_size, 0, false},
        {"c4 compressor wkv/wgate (bf16)", kWeightBF16, 2 * c.head_dim, hidden, 0, false},
        {"c128 compressor wkv/wgate (bf16)", kWeightBF16, c.head_dim, hidden, 0, false},
        {"indexer compressor wkv/wgate (bf16)", kWeightBF16, 2 * c.index_head_dim, hidden, 0, false},
        {"indexer weights_proj (bf16)", kWeightBF16, c.index_n_heads, hidden, 0, false},
        {"gate (bf16)", kWeightBF16, c.n_routed_experts, hidden, 0, false},
        {"head (bf16)", kWeightBF16, c.vocab_size, hidden, 0, true},
    };
  }

  void gemm(const std::string& model) {
    table_.section("linears in stored precision (fp32 activations), " + model_tag(model) +
                   " shapes [out x in], M rows");
    const std::vector<GemmShape> shapes = gemm_shapes(model);
    uint64_t seed = 100;
    for (const GemmShape& s : shapes) {
      const DeviceMatrix w(s.format, s.out, s.in, 1, seed++);
      const int64_t groups = s.x_group_outputs > 0 ? s.out / s.x_group_outputs : 1;
      const int64_t x_width = s.in * groups;
      for (const int64_t rows : options_.gemm_rows) {
        if (s.decode_only && rows > 64) continue;
        const DeviceBuffer<float> x = random_floats(static_cast<size_t>(rows * x_width), seed++);
        DeviceBuffer<float> y(static_cast<size_t>(rows * s.out));
        const double bytes = static_cast<double>(w.bytes_per_group) +
                             4.0 * static_cast<double>(rows * (x_width + s.out));
        const double flops = 2.0 * static_cast<double>(rows) * static_cast<double>(s.out * s.in);
        // fp8 weights: the fp32 kernels (batch-invariant mode) and the tensor-core path (fast
        // mode, tensor_core_min_rows = 1 here), each timed: the fp8 GEMM, or for the grouped wo_a
        // the bf16 GEMM (gemm_bf16_tc.h, activations kept in bf16 as the reference does).
        // The tensor-core path is also timed without its activation quantization (the GEMM
        // alone, on activations quantized before the timed calls): what a caller that quantizes
        // once for several linears would pay per linear. For wo_a: without its conversions of the
        // weight and activations to bf16 (one pass of rows only).
        // bf16 weights (from 64 rows, fast mode's tensor_core_min_rows): the fp32 kernels, the
        // split path (three bf16 terms, gemm_bf16_split.h; TFLOP/s counts the fp32 product's
        // 2MNK, a third of the tensor cores' work), its GEMMs alone (one pass of rows), the
        // split path with two terms, and with hi's GEMM over all of K in one (less accurate).
        const bool split = s.format == kWeightBF16 && !s.decode_only && rows >= 64;
        const bool both = s.format == kWeightFP8 || split;
        const bool grouped = s.x_group_outputs > 0;
        for (const int path : {0, 1, 2, 3, 4}) {
          if (path > 0 && !both) continue;
          if (path >= 3 && !split) continue;
          if (path == 2 && (grouped || split) && rows > kBf16TcPassRows) continue;
          const LinearWorkspace& ws = path > 0 ? tc_workspace(rows, x_width, s.out, s.in) : workspace_;
          if (path == 2 && split) {
            bf16_split_linear(w.view, x.data(), x_width, rows, y.data(), s.out, ws, nullptr, kBf16SplitTerms,
                              kBf16SplitConvert);
          } else if (path == 2) {
            if (grouped) {
              bf16_tc_linear(w.view, x.data(), x_width, rows, y.data(), s.out, s.x_group_outputs, ws, nullptr,
                             kBf16TcConvert);
            } else {
              fp8_tc_linear(w.view, x.data(), x_width, rows, y.data(), s.out, s.x_group_outputs, ws, nullptr,
                            kFp8TcQuantize);
            }
          }
          const double ms = timer_.median_ms([&] {
            if (path == 2 && split) {
              bf16_split_linear(w.view, x.data(), x_width, rows, y.data(), s.out, ws, nullptr, kBf16SplitTerms,
                                kBf16SplitMultiply);
            } else if (path == 3) {
              bf16_split_linear(w.view, x.data(), x_width, rows, y.data(), s.out, ws, nullptr, 2);
            } else if (path == 4) {
              bf16_split_linear(w.view, x.data(), x_width, rows, y.data(), s.out, ws, nullptr, kBf16SplitTerms,
                                kBf16SplitAll, s.in);
            } else if (path == 2 && grouped) {
              bf16_tc_linear(w.view, x.data(), x_width, rows, y.data(), s.out, s.x_group_outputs, ws, nullptr,
                             kBf16TcMultiply);
            } else if (path == 2) {
              fp8_tc_linear(w.view, x.data(), x_width, rows, y.data(), s.out, s.x_group_outputs, ws, nullptr,
                            kFp8TcMultiply);
            } else {
              linear(w.view, x.data(), x_width, rows, y.data(), s.out, s.x_group_outputs, ws, nullptr);
            }
          });
          const char* tags[] = {" fp32", " tensor cores", " tensor cores, GEMM only"};
          const char* grouped_tags[] = {" fp32", " bf16 tensor cores", " bf16 tensor cores, GEMM only"};
          const char* split_tags[] = {" fp32", " bf16x3 split", " bf16x3 split, GEMMs only", " bf16x2 split",
                                      " bf16x3 split, hi unsliced"};
          char what[160];
          std::snprintf(what, sizeof(what), "%s %s [%lld x %lld] M=%lld%s", model_tag(model).c_str(),
                        s.name.c_str(), static_cast<long long>(s.out), static_cast<long long>(s.in),
                        static_cast<long long>(rows),
                        both ? (split ? split_tags : (grouped ? grouped_tags : tags))[path] : "");
          // The GEMM alone reads e4m3 activations, not fp32 ones (wo_a: bf16 activations and a
          // bf16 weight).
          double path_bytes = bytes;
          if (path == 2 && split) {
            path_bytes = bytes + (3.0 * 2.0 - 4.0) * static_cast<double>(rows * x_width);
          } else if (path == 2) {
            path_bytes = grouped ? bytes - 2.0 * static_cast<double>(rows * x_width) + static_cast<double>(s.out * s.in)
                                 : bytes - 3.0 * static_cast<double>(rows * x_width);
          }
          table_.add("gemm", what, ms, path_bytes, flops,
                     s.format == kWeightFP8 && !(grouped && path > 0) ? Peak::kFP8 : Peak::kBF16);
        }
      }
    }
  }

  // The fp8 linears that share an input, end to end from the fp32 activations as the fast-mode
  // forward runs them: "simulated copy" is the path before Fp8Activations (fp8_simulate_rows, then
  // each linear quantizes that copy again), "quantized once" the one-pass producers and
  // linear_fp8 (the same bits). Bytes: the new path's fewest (weights, fp32 inputs read once, fp8
  // codes written and read, fp32 outputs).
  void fp8_inputs(const std::string& model) {
    table_.section("fp8 linears sharing one input, " + model_tag(model) +
                   " (tensor cores): simulated copy vs quantized once");
    const ModelConfig c = test_model_preset(model, 4);
    const int64_t hidden = c.hidden_size, q_lora = c.q_lora_rank, inter = c.moe_intermediate_size;
    const int64_t heads_d = c.num_attention_heads * c.head_dim, index_out = c.index_n_heads * c.index_head_dim;
    const int64_t low_rank = c.o_groups * c.o_lora_rank;
    const DeviceMatrix wq_a(kWeightFP8, q_lora, hidden, 1, 301), wkv(kWeightFP8, c.head_dim, hidden, 1, 302);
    const DeviceMatrix wq_b(kWeightFP8, heads_d, q_lora, 1, 303), index_wq_b(kWeightFP8, index_out, q_lora, 1, 304);
    const DeviceMatrix w1(kWeightFP8, inter, hidden, 1, 305), w3(kWeightFP8, inter, hidden, 1, 306);
    const DeviceMatrix w2(kWeightFP8, hidden, inter, 1, 307), wo_b(kWeightFP8, hidden, low_rank, 1, 308);
    const DeviceBuffer<float> norm = random_floats(static_cast<size_t>(q_lora), 309);
    for (const int64_t rows : options_.gemm_rows) {
      if (rows < 64) continue;
      const int64_t widest = std::max({hidden, low_rank, inter});
      const LinearWorkspace& ws = tc_workspace(rows, widest, hidden, hidden);
      const DeviceBuffer<float> x = random_floats(static_cast<size_t>(rows * widest), 310);
      DeviceBuffer<float> copy(static_cast<size_t>(rows * widest)), normed(static_cast<size_t>(rows * q_lora));
      DeviceBuffer<float> gate(static_cast<size_t>(rows * inter)), up(gate.size()), hidden_act(gate.size());
      DeviceBuffer<float> y1(static_cast<size_t>(rows * std::max(heads_d, hidden))), y2(y1.size());
      DeviceBuffer<uint8_t> codes(fp8_activation_bytes(rows, widest)), inner(fp8_activation_bytes(rows, widest));
      const double r = static_cast<double>(rows);
      auto weights = [](std::initializer_list<const DeviceMatrix*> ms) {
        double b = 0;
        for (const DeviceMatrix* m : ms) b += static_cast<double>(m->bytes_per_group);
        return b;
      };
      struct Group {
        std::string what;
        std::function<void()> before, after;
        double bytes, flops;
      };
      const std::vector<Group> groups = {
          {"wq_a + wkv on the block input",
           [&] {
             fp8_simulate_rows(x.data(), rows, hidden, hidden, copy.data(), hidden, nullptr);
             linear(wq_a.view, copy.data(), hidden, rows, y1.data(), q_lora, 0, ws, nullptr);
             linear(wkv.view, copy.data(), hidden, rows, y2.data(), c.head_dim, 0, ws, nullptr);
           },
           [&] {
             const Fp8Activations a = fp8_quantize_activations(x.data(), hidden, rows, hidden, codes.data(), nullptr);
             linear_fp8(wq_a.view, a, y1.data(), q_lora, ws, nullptr);
             linear_fp8(wkv.view, a, y2.data(), c.head_dim, ws, nullptr);
           },
           weights({&wq_a, &wkv}) + r * (4.0 * hidden + 3.0 * hidden + 4.0 * (q_lora + c.head_dim)),
           2.0 * r * hidden * (q_lora + c.head_dim)},
          {"q_norm + wq_b + indexer wq_b",
           [&] {
             rms_norm_rows(x.data(), rows, q_lora, q_lora, norm.data(), 1e-6f, normed.data(), nullptr);
             fp8_simulate_rows(normed.data(), rows, q_lora, q_lora, copy.data(), q_lora, nullptr);
             linear(wq_b.view, copy.data(), q_lora, rows, y1.data(), heads_d, 0, ws, nullptr);
             fp8_simulate_rows(normed.data(), rows, q_lora, q_lora, copy.data(), q_lora, nullptr);
             linear(index_wq_b.view, copy.data(), q_lora, rows, y2.data(), index_out, 0, ws, nullptr);
           },
           [&] {
             const Fp8Activations a = rms_norm_quantize_rows(x.data(), rows, q_lora, q_lora, norm.data(), 1e-6f,
                                                             inner.data(), nullptr, nullptr);
             linear_fp8(wq_b.view, a, y1.data(), heads_d, ws, nullptr);
             linear_fp8(index_wq_b.view, a, y2.data(), index_out, ws, nullptr);
           },
           weights({&wq_b, &index_wq_b}) + r * (4.0 * q_lora + 3.0 * q_lora + 4.0 * (heads_d + index_out)),
           2.0 * r * q_lora * (heads_d + index_out)},
          {"shared expert (w1 + w3, SwiGLU, w2; input copy kept)",
           [&] {
             fp8_simulate_rows(x.data(), rows, hidden, hidden, copy.data(), hidden, nullptr);
             linear(w1.view, copy.data(), hidden, rows, gate.data(), inter, 0, ws, nullptr);
             linear(w3.view, copy.data(), hidden, rows, up.data(), inter, 0, ws, nullptr);
             swiglu(gate.data(), up.data(), rows, inter, nullptr, 10.0f, hidden_act.data(), nullptr);
             fp8_simulate_rows(hidden_act.data(), rows, inter, inter, hidden_act.data(), inter, nullptr);
             linear(w2.view, hidden_act.data(), inter, rows, y1.data(), hidden, 0, ws, nullptr);
           },
           [&] {
             const Fp8Activations a = fp8_quantize_activations(x.data(), hidden, rows, hidden, codes.data(), nullptr,
                                                               copy.data(), hidden);
             linear_fp8(w1.view, a, gate.data(), inter, ws, nullptr);
             linear_fp8(w3.view, a, up.data(), inter, ws, nullptr);
             linear_fp8(w2.view,
                        swiglu_quantize(gate.data(), up.data(), rows, inter, nullptr, 10.0f, inner.data(), nullptr),
                        y1.data(), hidden, ws, nullptr);
           },
           weights({&w1, &w3, &w2}) + r * (15.0 * hidden + 18.0 * inter),  // x, copy, codes; gate/up; codes; y
           2.0 * r * hidden * inter * 3.0},
          {"wo_b alone",
           [&] {
             fp8_simulate_rows(x.data(), rows, low_rank, low_rank, copy.data(), low_rank, nullptr);
             linear(wo_b.view, copy.data(), low_rank, rows, y1.data(), hidden, 0, ws, nullptr);
           },
           [&] {
             linear_fp8(wo_b.view, fp8_quantize_activations(x.data(), low_rank, rows, low_rank, codes.data(), nullptr),
                        y1.data(), hidden, ws, nullptr);
           },
           weights({&wo_b}) + r * (4.0 * low_rank + 2.0 * low_rank + 4.0 * hidden), 2.0 * r * low_rank * hidden},
      };
      for (const Group& g : groups) {
        for (const bool once : {false, true}) {
          const double ms = timer_.median_ms(once ? g.after : g.before);
          table_.add("fp8in",
                     model_tag(model) + " " + g.what + " M=" + std::to_string(rows) +
                         (once ? " quantized once" : " simulated copy"),
                     ms, g.bytes, g.flops, Peak::kFP8);
        }
      }
    }
  }

  // The fast mode's workspace with scratch for `rows` rows of `x_width` floats, for the fp8 path
  // and for the bf16 path of a weight [out, in] (grown here, between timed calls).
  const LinearWorkspace& tc_workspace(int64_t rows, int64_t x_width, int64_t out, int64_t in) {
    if (blas_ == nullptr) {
      blas_ = std::make_unique<BlasLtHandle>();
      blas_workspace_.resize(kFp8TcBlasWorkspaceBytes);
    }
    const size_t need = fp8_tc_scratch_bytes(rows, x_width);
    if (fp8_scratch_.size() < need) {
      LONGCTX_CUDA_CHECK(cudaDeviceSynchronize());
      fp8_scratch_.resize(need);
    }
    const size_t bf16_need = bf16_tc_scratch_bytes(out, in, rows, x_width);
    if (bf16_scratch_.size() < bf16_need) {
      LONGCTX_CUDA_CHECK(cudaDeviceSynchronize());
      bf16_scratch_.resize(bf16_need);
    }
    tc_workspace_ = workspace_;
    tc_workspace_.tensor_core_min_rows = 1;
    tc_workspace_.blas_handle = blas_->get();
    tc_workspace_.blas_workspace = blas_workspace_.data();
    tc_workspace_.blas_workspace_bytes = blas_workspace_.size();
    tc_workspace_.fp8_scratch = fp8_scratch_.data();
    tc_workspace_.fp8_scratch_bytes = fp8_scratch_.size();
    tc_workspace_.bf16_scratch = bf16_scratch_.data();
    tc_workspace_.bf16_scratch_bytes = bf16_scratch_.size();
    const size_t split_need = bf16_split_scratch_bytes(rows, in);
    if (split_scratch_.size() < split_need) {
      LONGCTX_CUDA_CHECK(cudaDeviceSynchronize());
      split_scratch_.resize(split_need);
    }
    tc_workspace_.split_scratch = split_scratch_.data();
    tc_workspace_.split_scratch_bytes = split_scratch_.size();
    return tc_workspace_;
  }

  // The fast mode's workspace: tensor cores from tensor_core_min_rows rows (CudaOptions'
  // default), with the grouped GEMM's scratch grown to `bytes`.
  LinearWorkspace tensor_core_workspace(size_t bytes) {
    if (tc_scratch_.size() < bytes) tc_scratch_.resize(bytes);
    LinearWorkspace w = workspace_;
    w.tensor_core_min_rows = 64;
    w.tc_scratch = tc_scratch_.data();
    w.tc_scratch_bytes = tc_scratch_.size();
    return w;
  }

  // Times w1, w3 (on the tokens, gathered) and w2 (on the slots) of `experts` stacked fp4 experts
  // for each token count, each token picking k distinct experts uniformly (a balanced router:
  // uneven counts by chance), on the fp32 kernels (tensor_core_min_rows = 0, unless `fp32` is
  // false) and, with `tensor_cores`, on the tensor-core path too: as dispatched, and with fp4
  // converted inside the GEMM and by the conversion pass (A/B).
  void moe_cases(const std::string& model, int64_t experts, const std::vector<int64_t>& token_counts,
                 bool tensor_cores, bool fp32 = true) {
    const ModelConfig c = test_model_preset(model, 4);
    const int64_t k = c.num_experts_per_tok;
    const int64_t hidden = c.hidden_size, inter = c.moe_intermediate_size;
    const DeviceMatrix w1(kWeightFP4, inter, hidden, experts, 201);
    const DeviceMatrix w3(kWeightFP4, inter, hidden, experts, 202);
    const DeviceMatrix w2(kWeightFP4, hidden, inter, experts, 203);
    const int64_t max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
    // Activations fp8-simulated, as the forward passes them to the routed experts.
    DeviceBuffer<float> x = random_floats(static_cast<size_t>(max_tokens * hidden), 204);
    fp8_simulate_rows(x.data(), max_tokens, hidden, hidden, x.data(), hidden, nullptr);
    DeviceBuffer<float> gate(static_cast<size_t>(max_tokens * k * inter)), up(gate.size());
    DeviceBuffer<float> act = random_floats(gate.size(), 205);
    fp8_simulate_rows(act.data(), max_tokens * k, inter, inter, act.data(), inter, nullptr);
    DeviceBuffer<float> out(static_cast<size_t>(max_tokens * k * hidden));
    std::mt19937_64 random(7);
    for (const int64_t tokens : token_counts) {
      std::vector<std::vector<int32_t>> members(static_cast<size_t>(experts));
      std::vector<int32_t> pool(static_cast<size_t>(experts));
      for (int64_t t = 0; t < tokens; ++t) {
        for (size_t e = 0; e < pool.size(); ++e)
          pool[e] = static_cast<int32_t>(e);
        for (int64_t j = 0; j < k; ++j) {
          const size_t pick =
              static_cast<size_t>(j) + random() % (pool.size() - static_cast<size_t>(j));
          std::swap(pool[static_cast<size_t>(j)], pool[pick]);
          members[static_cast<size_t>(pool[static_cast<size_t>(j)])].push_back(
              static_cast<int32_t>(t));
        }
      }
      std::vector<int32_t> counts, offsets, slot_rows, busy;
      for (int64_t e = 0; e < experts; ++e) {
        const auto& m = members[static_cast<size_t>(e)];
        offsets.push_back(static_cast<int32_t>(slot_rows.size()));
        counts.push_back(static_cast<int32_t>(m.size()));
        if (!m.empty()) busy.push_back(static_cast<int32_t>(e));
        slot_rows.insert(slot_rows.end(), m.begin(), m.end());
      }
      const int64_t active = static_cast<int64_t>(busy.size());
      busy.resize(static_cast<size_t>(experts), -1);
      const DeviceBuffer<int32_t> d_counts = to_device(counts), d_offsets = to_device(offsets),
                                  d_rows = to_device(slot_rows), d_busy = to_device(busy);
      const int64_t slots = static_cast<int64_t>(slot_rows.size());
      const double weight_bytes =
          static_cast<double>(active) *
          static_cast<double>(w1.bytes_per_group + w3.bytes_per_group + w2.bytes_per_group);
      const double activation_bytes =
          4.0 * (2.0 * static_cast<double>(tokens * hidden) +
                 3.0 * static_cast<double>(slots * inter) + static_cast<double>(slots * hidden));
      const double flops =
          2.0 * 3.0 * static_cast<double>(slots) * static_cast<double>(inter * hidden);
      // fp4 kAuto: the dispatcher; kInGemm / kPass: grouped_linear_tc forced to one conversion.
      const auto time = [&](const LinearWorkspace& workspace, const std::string& path,
                            Fp4Conversion fp4 = Fp4Conversion::kAuto) {
        const auto call = [&](const DeviceMatrix& w, const float* in, int64_t in_width,
                              const int32_t* rows, float* y, int64_t y_width) {
          if (fp4 == Fp4Conversion::kAuto) {
            grouped_linear(w.view, static_cast<int>(experts), d_offsets.data(), d_counts.data(),
                           slots, in, in_width, rows, y, y_width, workspace, nullptr,
                           d_busy.data());
          } else if (!grouped_linear_tc(w.view, static_cast<int>(experts), d_offsets.data(),
                                        d_counts.data(), slots, in, in_width, rows, y, y_width,
                                        workspace, nullptr, d_busy.data(), fp4)) {
            throw Error("bench moe: grouped_linear_tc declined");
          }
        };
        const double ms = timer_.median_ms([&] {
          call(w1, x.data(), hidden, d_rows.data(), gate.data(), inter);
          call(w3, x.data(), hidden, d_rows.data(), up.data(), inter);
          call(w2, act.data(), inter, nullptr, out.data(), hidden);
        });
        table_.add("moe",
                   model_tag(model) + " " + std::to_string(tokens) + " tokens (" +
                       std::to_string(active) + " experts busy)" + path,
                   ms, weight_bytes + activation_bytes, flops, Peak::kFP8);
      };
      if (tensor_cores) {
        const auto scratch = [&](Fp4Conversion fp4) {
          return std::max(
              grouped_linear_tc_scratch_bytes(w1.view, static_cast<int>(experts), slots, fp4),
              grouped_linear_tc_scratch_bytes(w2.view, static_cast<int>(experts), slots, fp4));
        };
        time(tensor_core_workspace(scratch(Fp4Conversion::kAuto)), ", tensor cores");
        time(tensor_core_workspace(scratch(Fp4Conversion::kInGemm)), ", TC, fp4 in GEMM",
             Fp4Conversion::kInGemm);
        time(tensor_core_workspace(scratch(Fp4Conversion::kPass)), ", TC, fp4 conversion pass",
             Fp4Conversion::kPass);
      }
      if (fp32) time(workspace_, tensor_cores ? ", fp32 SIMT" : "");
    }
  }

  // Routed experts (fp4 e2m1 + per-32 scales) at decode sizes, all the preset's experts.
  void moe(const std::string& model) {
    const ModelConfig c = test_model_preset(model, 4);
    const int64_t experts = c.n_routed_experts, k = c.num_experts_per_tok;
    table_.section("MoE grouped GEMM, fp4 experts, " + model_tag(model) + " (" +
                   std::to_string(experts) + " experts of [" +
                   std::to_string(c.moe_intermediate_size) + " x " +
                   std::to_string(c.hidden_size) + "] x3, top-" + std::to_string(k) + ")");
    moe_cases(model, experts, options_.moe_tokens, false);
  }

  // Prefill sizes with 8 experts kept (as `bench e2e --experts 8`): 1.5K-12K rows per expert,
  // the tensor-core path against the fp32 kernels.
  void moe_prefill(const std::string& model) {
    const ModelConfig c = test_model_preset(model, 4);
    const int64_t experts = 8, k = c.num_experts_per_tok;
    table_.section("MoE grouped GEMM at prefill, fp4 experts, " + model_tag(model) + " (" +
                   std::to_string(experts) + " experts of [" +
                   std::to_string(c.moe_intermediate_size) + " x " +
                   std::to_string(c.hidden_size) + "] x3, top-" + std::to_string(k) +
                   "), tensor cores vs fp32 SIMT");
    moe_cases(model, experts, options_.moe_prefill_tokens, true);
  }

  // A prefill chunk of 8192 tokens over all the preset's experts (the real model: every expert
  // busy, ~190 rows each for Flash), tensor cores only: where converting the fp4 weights costs
  // most against the GEMM.
  void moe_prefill_all_experts(const std::string& model) {
    const ModelConfig c = test_model_preset(model, 4);
    const int64_t experts = c.n_routed_experts, k = c.num_experts_per_tok;
    table_.section("MoE grouped GEMM at prefill, fp4 experts, " + model_tag(model) + " (" +
                   std::to_string(experts) + " experts of [" +
                   std::to_string(c.moe_intermediate_size) + " x " +
                   std::to_string(c.hidden_size) + "] x3, top-" + std::to_string(k) +
                   "), tensor cores");
    moe_cases(model, experts, {8192}, true, false);
  }

  void hyper_connections() {
    table_.section(
        "hyper-connection pre (mixes, Sinkhorn, weighted sum, RMSNorm), Flash hidden 4096, hc 4");
    const int64_t hidden = 4096, hc = 4, mix = 24;
    const DeviceBuffer<float> fn = random_floats(static_cast<size_t>(mix * hc * hidden), 51, 0.01f);
    const DeviceBuffer<float> base = random_floats(static_cast<size_t>(mix), 52);
    const DeviceBuffer<float> scale = random_floats(3, 53);
    const DeviceBuffer<float> norm = random_floats(static_cast<size_t>(hidden), 54);
    for (const int64_t rows : {int64_t{1}, int64_t{64}, int64_t{4096}, int64_t{8192}}) {
      const DeviceBuffer<float> streams =
          random_floats(static_cast<size_t>(rows * hc * hidden), 55);
      DeviceBuffer<float> y(static_cast<size_t>(rows * hidden)),
          post(static_cast<size_t>(rows * hc)), comb(static_cast<size_t>(rows * hc * hc));
      DeviceBuffer<float> scratch(hc_workspace_floats(rows, static_cast<int>(hc), hidden));
      const double ms = timer_.median_ms([&] {
        hc_pre({fn.data(), base.data(), scale.data()}, streams.data(), rows, static_cast<int>(hc),
               hidden, 20, 1e-6f, 1e-6f, norm.data(), y.data(), post.data(), comb.data(),
               scratch.data(), nullptr);
      });
      table_.add("hc", "hc_pre rows " + std::to_string(rows), ms,
                 4.0 * static_cast<double>(rows * (hc + 1) * hidden + mix * hc * hidden),
                 2.0 * mix * static_cast<double>(rows * hc * hidden), Peak::kNone);
    }
    // hc_post: streams [rows, hc, hidden] read and written, out [rows, hidden] read.
    for (const int64_t rows : {int64_t{1}, int64_t{64}, int64_t{4096}, int64_t{8192}}) {
      DeviceBuffer<float> streams = random_floats(static_cast<size_t>(rows * hc * hidden), 56);
      const DeviceBuffer<float> out = random_floats(static_cast<size_t>(rows * hidden), 57);
      const DeviceBuffer<float> post = random_floats(static_cast<size_t>(rows * hc), 58);
      const DeviceBuffer<float> comb = random_floats(static_cast<size_t>(rows * hc * hc), 59, 0.25f);
      const double ms = timer_.median_ms([&] {
        hc_post(out.data(), post.data(), comb.data(), rows, static_cast<int>(hc), hidden,
                streams.data(), nullptr);
      });
      table_.add("hc", "hc_post rows " + std::to_string(rows), ms,
                 4.0 * static_cast<double>(rows * (2 * hc + 1) * hidden + rows * hc * (hc + 1)),
                 2.0 * static_cast<double>(rows * hc * (hc + 1) * hidden), Peak::kNone);
    }
  }

  // Sampling at the V4 vocabulary (temperature 1, top-p 0.9): the host sampler per row, then the
  // GPU sampler per batch (tokens bit-identical). Two logit spreads: N(0, 3^2) puts the whole
  // vocabulary within 40 of the top score (every term enters the sums: the slow case); N(0, 12^2)
  // leaves about a tenth of it there.
  void sampling() {
    const int64_t vocab = 129280, max_rows = 64;
    for (const float stddev : {3.0f, 12.0f}) {
      table_.section("sampling, vocab 129280, temperature 1, top-p 0.9, logits N(0, " +
                     std::to_string(static_cast<int>(stddev)) + "^2)");
      const DeviceBuffer<float> logits = random_floats(static_cast<size_t>(max_rows * vocab), 61, stddev);
      std::vector<float> host(static_cast<size_t>(max_rows * vocab));
      LONGCTX_CUDA_CHECK(cudaMemcpy(host.data(), logits.data(), host.size() * sizeof(float), cudaMemcpyDeviceToHost));
      SamplingParams params;
      params.top_p = 0.9;
      PenaltyState penalties;
      penalties.init({}, vocab, params);
      std::vector<double> cpu_ms;
      for (int64_t r = 0; r < 8; ++r) {
        const auto start = std::chrono::steady_clock::now();
        const SampleResult result = sample_token(
            std::span<const float>(host.data() + r * vocab, static_cast<size_t>(vocab)), params, penalties, 7, r, 0);
        cpu_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
        if (result.token < 0) fail("sampling bench: bad token");
      }
      std::sort(cpu_ms.begin(), cpu_ms.end());
      std::printf("%-62s %10.4f   (host clock, median of 8 rows)\n", "host sample_token, one row", cpu_ms[4]);
      DeviceSampler sampler;
      for (const int64_t rows : {int64_t{1}, int64_t{8}, int64_t{64}}) {
        std::vector<SamplingRow> draws(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
          draws[static_cast<size_t>(r)].row = r;
          draws[static_cast<size_t>(r)].top_p = 0.9;
          draws[static_cast<size_t>(r)].seed = 7;
          draws[static_cast<size_t>(r)].stream = r;
        }
        SampleOutput out;
        const double ms = timer_.median_ms([&] { sampler.sample(logits.data(), vocab, draws, &out, nullptr); });
        for (int64_t r = 0; r < std::min<int64_t>(rows, 8); ++r) {
          const SampleResult expected = sample_token(
              std::span<const float>(host.data() + r * vocab, static_cast<size_t>(vocab)), params, penalties, 7, r, 0);
          if (out.tokens[static_cast<size_t>(r)] != expected.token) fail("sampling bench: GPU and host tokens differ");
        }
        table_.add("sampling", "GPU sampler, batch " + std::to_string(rows), ms,
                   4.0 * static_cast<double>(rows * vocab), 0.0, Peak::kNone);
      }
    }
  }

  const KernelBenchOptions& options_;
  DevicePeaks peaks_;
  KernelTimer timer_;
  ResultTable table_;
  DeviceBuffer<float> partial_;
  LinearWorkspace workspace_;
  DeviceBuffer<uint8_t> tc_scratch_;
  std::unique_ptr<BlasLtHandle> blas_;  // the fp8 tensor-core path's, made at its first case
  DeviceBuffer<uint8_t> blas_workspace_, fp8_scratch_, bf16_scratch_, split_scratch_;
  LinearWorkspace tc_workspace_;
};

}  // namespace

int run_kernel_bench(const KernelBenchOptions& options) {
  KernelBench bench(options);
  return bench.run();
}

}  // namespace longctx::bench

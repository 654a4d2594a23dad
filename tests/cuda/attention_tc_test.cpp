// sparse_attention_tc (tensor-core attention of the fast mode) against the CPU reference
// attention (cpu::attend over the gathered keys, then the inverse RoPE), on random queries and
// random pages.
//
// Tolerance: the kernel rounds the query and the probabilities to bf16 (the reference's bf16
// attention); keys are exact. Measured on the H100 (2026-11-23): max |gpu - cpu| / max |cpu|
// 1.8e-3 .. 2.6e-3 and ||gpu - cpu|| / ||cpu|| 1.4e-3 .. 2.1e-3 over these cases; the test
// allows 1e-2 and 5e-3 (fp32 attention lands near 1e-7, so a wrong key, scale or sink fails). Every output element is poisoned (NaN) before the call, so an unwritten one fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>

#include "common/block_quant.h"
#include "common/thread_pool.h"
#include "cpu/cpu_attention.h"
#include "cpu/cpu_kv_storage.h"
#include "cuda/kernels.h"
#include "cuda/kv_view.h"
#include "kv/kv_cache_manager.h"
#include "kv/kv_entry_codec.h"
#include "model/rope.h"
#include "test_util.h"

namespace longctx {
namespace {

using cuda::DeviceBuffer;
using cuda::to_device;
using cuda_test::download;
using cuda_test::random_floats;
using cuda_test::relative_error;

struct Chunk {
  int32_t start;
  int32_t rows;
};

struct Case {
  std::string name;
  KvDtype dtype;
  int ratio;
  int heads;
  int window;
  int topk;  // ratio 4: selections of at most topk entries
  std::vector<Chunk> chunks;
};

ModelConfig config_for(const Case& k) {
  ModelConfig c;
  c.hidden_size = 256;
  c.num_hidden_layers = 1;
  c.num_nextn_predict_layers = 0;
  c.num_attention_heads = k.heads;
  c.head_dim = 512;
  c.qk_rope_head_dim = 64;
  c.sliding_window = k.window;
  c.compress_ratios = {k.ratio};
  c.index_n_heads = 4;
  c.index_head_dim = 128;
  c.index_topk = k.topk;
  c.compress_rope_theta = 160000;
  c.rope_scaling = {true, 16.0, 65536, 32.0, 1.0};
  c.rms_norm_eps = 1e-6;
  c.hc_mult = 4;
  return c;
}

double norm_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    ref += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(ref, 1e-30));
}

// Every chunk is its own sequence with its own (shuffled) pages; fills the window ring before
// each chunk and the compressed entries visible to its last row, runs the kernel and the
// reference, returns {max-relative error, norm-relative error}.
std::pair<double, double> run_case(const Case& k, uint32_t seed) {
  const ModelConfig c = config_for(k);
  const KvLayout layout = make_kv_layout(c, {k.dtype, IndexerKeyDtype::kF32});
  const LayerKvLayout& l = layout.layers[0];
  const int d = 512;
  const int heads = k.heads;
  const KvEntryCodec codec{k.dtype, d, 64};
  std::mt19937 random(seed);

  // Pages: sequence i uses blocks [0, blocks_i); page ids drawn from a shuffled pool.
  std::vector<int32_t> blocks;
  int32_t total_blocks = 0;
  for (const Chunk& ch : k.chunks) {
    blocks.push_back((ch.start + ch.rows + 255) / 256);
    total_blocks += blocks.back();
  }
  KvPoolSizes sizes{total_blocks + 1, {}};
  if (k.ratio > 0) sizes.compressed_pages = {total_blocks + 1};
  CpuKvStorage storage(layout, sizes);
  std::vector<int32_t> window_ids(static_cast<size_t>(total_blocks)), compressed_ids(static_cast<size_t>(total_blocks));
  std::iota(window_ids.begin(), window_ids.end(), 1);
  std::iota(compressed_ids.begin(), compressed_ids.end(), 1);
  std::shuffle(window_ids.begin(), window_ids.end(), random);
  std::shuffle(compressed_ids.begin(), compressed_ids.end(), random);

  const int64_t entry_bytes = static_cast<int64_t>(l.kv_entry_bytes);
  std::vector<std::vector<int32_t>> wtable(k.chunks.size()), ctable(k.chunks.size());
  int32_t used = 0;
  for (size_t i = 0; i < k.chunks.size(); ++i) {
    for (int32_t b = 0; b < blocks[i]; ++b, ++used) {
      wtable[i].push_back(window_ids[static_cast<size_t>(used)]);
      ctable[i].push_back(compressed_ids[static_cast<size_t>(used)]);
    }
  }
  auto ring_entry = [&](size_t i, int64_t p) {
    return storage.window_page(0, wtable[i][static_cast<size_t>(p / 256)]) + ((p % 256) % k.window) * entry_bytes;
  };
  auto compressed_entry = [&](size_t i, int64_t e) {
    return storage.compressed_page(0, ctable[i][static_cast<size_t>(e * k.ratio / 256)]) +
           (e % l.entries_per_page) * entry_bytes;
  };
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto stored = [&] {
    std::vector<float> v(static_cast<size_t>(d));
    for (float& x : v) x = normal(random);
    fp8_simulate_blocks(v.data(), static_cast<size_t>(d - 64), 64);
    codec.round_trip(v.data());
    return v;
  };

  int64_t rows = 0;
  std::vector<float> fresh;
  for (size_t i = 0; i < k.chunks.size(); ++i) {
    const Chunk& ch = k.chunks[i];
    for (int64_t p = std::max(0, ch.start - k.window); p < ch.start; ++p) codec.encode(stored().data(), ring_entry(i, p));
    if (k.ratio > 0) {
      for (int64_t e = 0; e < (ch.start + ch.rows) / k.ratio; ++e) codec.encode(stored().data(), compressed_entry(i, e));
    }
    for (int32_t r = 0; r < ch.rows; ++r) {
      const std::vector<float> v = stored();
      fresh.insert(fresh.end(), v.begin(), v.end());
    }
    rows += ch.rows;
  }

  // Batch metadata: chunk infos, tables, positions, row chunks (as the backend packs them).
  std::vector<cuda::ChunkInfo> infos(k.chunks.size());
  std::vector<int32_t> ints(infos.size() * sizeof(cuda::ChunkInfo) / 4);
  std::vector<int32_t> positions, row_chunk, row_seq;
  int32_t first_row = 0;
  for (size_t i = 0; i < k.chunks.size(); ++i) {
    cuda::ChunkInfo& info = infos[i];
    info.first_row = first_row;
    info.rows = k.chunks[i].rows;
    info.start_pos = k.chunks[i].start;
    info.window_table = static_cast<int32_t>(ints.size());
    info.window_blocks = blocks[i];
    ints.insert(ints.end(), wtable[i].begin(), wtable[i].end());
    info.compressed_table[0] = static_cast<int32_t>(ints.size());
    info.compressed_blocks[0] = blocks[i];
    ints.insert(ints.end(), ctable[i].begin(), ctable[i].end());
    for (int32_t r = 0; r < info.rows; ++r) {
      positions.push_back(info.start_pos + r);
      row_chunk.push_back(static_cast<int32_t>(i));
    }
    first_row += info.rows;
  }
  std::memcpy(ints.data(), infos.data(), infos.size() * sizeof(cuda::ChunkInfo));
  const int32_t positions_at = static_cast<int32_t>(ints.size());
  ints.insert(ints.end(), positions.begin(), positions.end());
  const int32_t row_chunk_at = static_cast<int32_t>(ints.size());
  ints.insert(ints.end(), row_chunk.begin(), row_chunk.end());
  const DeviceBuffer<int32_t> meta = to_device(ints);
  cuda::BatchView batch;
  batch.chunks = reinterpret_cast<const cuda::ChunkInfo*>(meta.data());
  batch.num_chunks = static_cast<int>(k.chunks.size());
  batch.tables = meta.data();
  batch.row_pos = meta.data() + positions_at;
  batch.row_chunk = meta.data() + row_chunk_at;
  batch.rows = rows;

  // Selections (ratio 4): a random ascending subset of each row's visible entries.
  const bool select = k.ratio == 4;
  const int topk = std::max(1, k.topk);
  std::vector<int32_t> selected(static_cast<size_t>(rows * topk), -1), counts(static_cast<size_t>(rows), 0);
  std::vector<std::vector<int64_t>> lists(static_cast<size_t>(rows));
  int64_t max_keys = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pos = positions[static_cast<size_t>(r)];
    const int64_t visible = k.ratio > 0 ? (pos + 1) / k.ratio : 0;
    std::vector<int64_t> all(static_cast<size_t>(visible));
    std::iota(all.begin(), all.end(), 0);
    if (select) {
      std::shuffle(all.begin(), all.end(), random);
      all.resize(static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(topk, visible) - r % 3)));
      std::sort(all.begin(), all.end());
      counts[static_cast<size_t>(r)] = static_cast<int32_t>(all.size());
      std::copy(all.begin(), all.end(), selected.begin() + r * topk);
    }
    max_keys = std::max<int64_t>(max_keys, std::min<int64_t>(pos + 1, k.window) + static_cast<int64_t>(all.size()));
    lists[static_cast<size_t>(r)] = std::move(all);
  }

  const std::vector<float> q = random_floats(static_cast<size_t>(rows * heads * d), 1.0f, seed + 1);
  const std::vector<float> sinks = random_floats(static_cast<size_t>(heads), 1.0f, seed + 2);
  const RopeTable rope = RopeTable::for_layer(c, k.ratio);

  // Device run.
  const size_t wbytes = static_cast<size_t>(sizes.window_pages) * l.window_page_bytes;
  DeviceBuffer<uint8_t> window(wbytes);
  window.upload(storage.window_page(0, 0), wbytes);
  DeviceBuffer<uint8_t> compressed;
  if (k.ratio > 0) {
    const size_t cbytes = static_cast<size_t>(sizes.compressed_pages[0]) * l.compressed_page_bytes;
    compressed.resize(cbytes);
    compressed.upload(storage.compressed_page(0, 0), cbytes);
  }
  const cuda::KvLayerView view = cuda::make_kv_layer_view(layout, 0, window.data(), compressed.data());
  EXPECT_TRUE(cuda::sparse_attention_tc_supported(view));
  const DeviceBuffer<float> dq = to_device(q), dfresh = to_device(fresh), dsinks = to_device(sinks);
  const DeviceBuffer<float> freq = to_device(rope.inverse_frequencies());
  const DeviceBuffer<int32_t> dselected = to_device(selected), dcounts = to_device(counts);
  DeviceBuffer<float> dout(static_cast<size_t>(rows * heads * d));
  LONGCTX_CUDA_CHECK(cudaMemset(dout.data(), 0xff, dout.size() * sizeof(float)));  // NaN
  // A workspace of 3 rows: rows split over several blocks go through it in slices.
  DeviceBuffer<float> workspace(cuda::attention_workspace_floats(3, heads, d, max_keys));
  cuda::sparse_attention_tc(view, batch, dq.data(), dfresh.data(), dsinks.data(), select ? dselected.data() : nullptr,
                            dcounts.data(), topk, heads, k.window, max_keys, freq.data(), dout.data(), workspace.data(),
                            workspace.size(), nullptr);
  LONGCTX_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = download(dout, dout.size());

  // Reference: the keys of each row gathered as cpu_attention does, attend, inverse RoPE.
  std::vector<float> ref(got.size());
  std::vector<size_t> seq_of(static_cast<size_t>(rows));
  std::vector<int64_t> row_in_chunk(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    seq_of[static_cast<size_t>(r)] = static_cast<size_t>(row_chunk[static_cast<size_t>(r)]);
    row_in_chunk[static_cast<size_t>(r)] = infos[seq_of[static_cast<size_t>(r)]].first_row;
  }
  ThreadPool::global().parallel_for(static_cast<size_t>(rows), [&](size_t begin, size_t end) {
    std::vector<float> keys, key(static_cast<size_t>(d));
    for (size_t r = begin; r < end; ++r) {
      const size_t i = seq_of[r];
      const Chunk& ch = k.chunks[i];
      const int64_t pos = positions[r];
      keys.clear();
      for (int64_t p = std::max<int64_t>(0, pos - k.window + 1); p <= pos; ++p) {
        if (p >= ch.start) {
          const float* f = fresh.data() + (row_in_chunk[r] + p - ch.start) * d;
          keys.insert(keys.end(), f, f + d);
        } else {
          codec.decode(ring_entry(i, p), key.data());
          keys.insert(keys.end(), key.begin(), key.end());
        }
      }
      for (const int64_t e : lists[r]) {
        codec.decode(compressed_entry(i, e), key.data());
        keys.insert(keys.end(), key.begin(), key.end());
      }
      float* o = ref.data() + r * static_cast<size_t>(heads * d);
      cpu::attend(q.data() + r * static_cast<size_t>(heads * d), keys.data(), static_cast<int64_t>(keys.size()) / d,
                  sinks.data(), heads, d, o);
      for (int h = 0; h < heads; ++h) rope.rotate(o + h * d + d - 64, pos, true);
    }
  });
  size_t bad = 0;
  for (const float v : got) bad += !std::isfinite(v);
  EXPECT_EQ(bad, 0u) << k.name << ": non-finite (unwritten) outputs";
  return {relative_error(got, ref), norm_error(got, ref)};
}

TEST(CudaAttentionTc, MatchesCpuReference) {
  const std::vector<Case> cases = {
      // Flash shapes: 64 heads, window 128. Many rows: one block per row (epilogue path).
      {"c4 select bf16, 1 chunk of 300 at 3000", KvDtype::kBF16, 4, 64, 128, 512, {{3000, 300}}},
      {"c4 select fp8, 1 chunk of 300 at 3000", KvDtype::kFP8, 4, 64, 128, 512, {{3000, 300}}},
      // Few rows: keys split over blocks, partials and the combine launch (sliced workspace).
      {"c4 select fp8, chunks at 0, 700, 2001", KvDtype::kFP8, 4, 64, 128, 512, {{0, 9}, {700, 12}, {2001, 7}}},
      {"c128 all fp8, chunks at 20000 and 9001", KvDtype::kFP8, 128, 64, 128, 0, {{20000, 40}, {9001, 230}}},
      {"c128 all bf16, chunk of 20 at 16300", KvDtype::kBF16, 128, 64, 128, 0, {{16300, 20}}},
      {"c0 bf16, 10 heads, window 16, chunks at 100 and 0", KvDtype::kBF16, 0, 10, 16, 0, {{100, 20}, {0, 5}}},
      {"c0 fp8, 64 heads, 1 chunk of 280 at 250", KvDtype::kFP8, 0, 64, 128, 0, {{250, 280}}},
      // Pro: 128 heads (two head groups), top-1024.
      {"Pro c4 select fp8, 128 heads, top-1024, chunk of 16 at 6000", KvDtype::kFP8, 4, 128, 128, 1024, {{6000, 16}}},
  };
  uint32_t seed = 100;
  for (const Case& k : cases) {
    const auto [max_error, norm_err] = run_case(k, seed += 10);
    std::printf("tc attention %-60s max-rel %.3g, norm-rel %.3g\n", k.name.c_str(), max_error, norm_err);
    EXPECT_LE(max_error, 1e-2) << k.name;
    EXPECT_LE(norm_err, 5e-3) << k.name;
  }
}

}  // namespace
}  // namespace longctx

// Times the CUDA kernels at V4-Flash sizes and prints achieved GB/s (the fewest bytes each
// launch must move: weights, KV bytes read, activations in and out) and TFLOP/s.
// Figures, not a test. usage: cuda_kernel_bench [repeats=50]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/kv_view.h"
#include "kv/kv_layout.h"

using namespace longctx;
using namespace longctx::cuda;

namespace {

int g_repeats = 50;

// Median time in ms of fn over the repeats, after warm-up.
double time_ms(const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  LONGCTX_CUDA_CHECK(cudaEventCreate(&start));
  LONGCTX_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < g_repeats; ++i) {
    LONGCTX_CUDA_CHECK(cudaEventRecord(start));
    fn();
    LONGCTX_CUDA_CHECK(cudaEventRecord(stop));
    LONGCTX_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    LONGCTX_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void report(const std::string& what, double ms, double bytes, double flops) {
  std::printf("%-58s %9.4f ms %8.1f GB/s %7.2f TFLOP/s\n", what.c_str(), ms, bytes / ms / 1e6, flops / ms / 1e9);
}

DeviceBuffer<uint8_t> random_bytes(size_t n, uint8_t mask, uint8_t base) {
  std::vector<uint8_t> host(n);
  std::mt19937 random(1);
  for (auto& b : host) b = static_cast<uint8_t>((random() & mask) | base);
  return to_device(host);
}

DeviceBuffer<float> random_floats(size_t n) {
  std::vector<float> host(n);
  std::mt19937 random(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& v : host) v = normal(random);
  return to_device(host);
}

size_t weight_bytes(int format, int64_t out, int64_t in) {
  const size_t n = static_cast<size_t>(out * in);
  return format == kWeightBF16 ? 2 * n : (format == kWeightFP8 ? n + n / 16384 : n / 2 + n / 32);
}

void bench_linear(const char* name, int format, int64_t out, int64_t in, const std::vector<int64_t>& rows_list,
                  LinearWorkspace workspace) {
  DeviceBuffer<uint8_t> w = random_bytes(weight_bytes(format, out, in), 0x3f, 0);
  DeviceBuffer<uint8_t> s = random_bytes(static_cast<size_t>(out * in / 32 + 1024), 0x03, 0x78);
  const int64_t max_rows = *std::max_element(rows_list.begin(), rows_list.end());
  DeviceBuffer<float> x = random_floats(static_cast<size_t>(max_rows * in));
  DeviceBuffer<float> y(static_cast<size_t>(max_rows * out));
  const LinearView view{w.data(), s.data(), format, out, in, 0, 0};
  for (const int64_t rows : rows_list) {
    const double ms = time_ms([&] { linear(view, x.data(), in, rows, y.data(), out, 0, workspace, nullptr); });
    const double bytes = static_cast<double>(weight_bytes(format, out, in)) + 4.0 * static_cast<double>(rows * (in + out));
    report(std::string(name) + " rows " + std::to_string(rows), ms, bytes, 2.0 * static_cast<double>(rows * out * in));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_repeats = std::stoi(argv[1]);
  cudaDeviceProp properties{};
  LONGCTX_CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
  std::printf("device %s, %d SMs\n", properties.name, properties.multiProcessorCount);
  DeviceBuffer<float> partial(size_t{16} << 20);
  const LinearWorkspace workspace{partial.data(), partial.size(), properties.multiProcessorCount};

  // Copy ceiling.
  {
    DeviceBuffer<uint8_t> a(size_t{1} << 30), b(size_t{1} << 30);
    const double ms = time_ms([&] { LONGCTX_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), a.size(), cudaMemcpyDeviceToDevice)); });
    report("device-to-device copy 1 GiB (read + write)", ms, 2.0 * static_cast<double>(a.size()), 0);
  }

  // Linears (Flash: wq_b 32768x1024, wo_b 4096x8192 fp8; head 129280x4096 bf16).
  bench_linear("linear fp8 wq_b [32768 x 1024]", kWeightFP8, 32768, 1024, {1, 8, 64, 512, 4096}, workspace);
  bench_linear("linear fp8 wo_b [4096 x 8192]", kWeightFP8, 4096, 8192, {1, 8, 64, 512, 4096}, workspace);
  bench_linear("linear fp8 wq_a [1024 x 4096]", kWeightFP8, 1024, 4096, {1, 8, 64}, workspace);
  bench_linear("linear bf16 head [129280 x 4096]", kWeightBF16, 129280, 4096, {1, 8, 64}, workspace);

  // Routed experts: 256 experts of fp4 [2048 x 4096] (w1), k = 6.
  {
    const int experts = 256, k = 6;
    const int64_t out = 2048, in = 4096;
    const size_t per = weight_bytes(kWeightFP4, out, in);
    DeviceBuffer<uint8_t> w = random_bytes(per * experts, 0x77, 0);
    DeviceBuffer<uint8_t> s = random_bytes(static_cast<size_t>(out * in / 32) * experts, 0x03, 0x78);
    const LinearView view{w.data(), s.data(), kWeightFP4, out, in, static_cast<int64_t>(per),
                          static_cast<int64_t>(out * in / 32)};
    for (const int64_t rows : {int64_t{1}, int64_t{16}, int64_t{64}, int64_t{4096}}) {
      // Row r picks experts (r * 7 + j * 41) % 256: spread like a trained router.
      std::vector<int32_t> counts(experts, 0), offsets(experts, 0), slot_rows;
      std::vector<std::vector<int32_t>> members(experts);
      for (int64_t r = 0; r < rows; ++r) {
        for (int j = 0; j < k; ++j) members[static_cast<size_t>((r * 7 + j * 41) % experts)].push_back(static_cast<int32_t>(r));
      }
      int active = 0;
      for (int e = 0; e < experts; ++e) {
        offsets[static_cast<size_t>(e)] = static_cast<int32_t>(slot_rows.size());
        counts[static_cast<size_t>(e)] = static_cast<int32_t>(members[static_cast<size_t>(e)].size());
        active += counts[static_cast<size_t>(e)] > 0;
        slot_rows.insert(slot_rows.end(), members[static_cast<size_t>(e)].begin(), members[static_cast<size_t>(e)].end());
      }
      std::vector<int32_t> busy;
      for (int e = 0; e < experts; ++e) {
        if (counts[static_cast<size_t>(e)] > 0) busy.push_back(e);
      }
      busy.resize(static_cast<size_t>(experts), -1);
      DeviceBuffer<int32_t> dc = to_device(counts), doff = to_device(offsets), drows = to_device(slot_rows),
                            dbusy = to_device(busy);
      DeviceBuffer<float> x = random_floats(static_cast<size_t>(rows * in));
      DeviceBuffer<float> y(slot_rows.size() * static_cast<size_t>(out));
      const int64_t slots = static_cast<int64_t>(slot_rows.size());
      const double ms = time_ms([&] {
        grouped_linear(view, experts, doff.data(), dc.data(), slots, x.data(), in, drows.data(), y.data(), out, workspace,
                       nullptr, dbusy.data());
      });
      const double bytes = static_cast<double>(per + static_cast<size_t>(out * in / 32)) * active + 4.0 * static_cast<double>(slots * (in + out));
      report("grouped fp4 experts w1 [2048 x 4096], " + std::to_string(rows) + " rows x 6 (" + std::to_string(active) + " experts)",
             ms, bytes, 2.0 * static_cast<double>(slots * out * in));
    }
  }

  // Paged attention and indexer at context 65536 (Flash: 64 heads of 512, window 128,
  // top-512 of the ratio-4 entries; indexer 64 heads of 128).
  for (const KvDtype dtype : {KvDtype::kBF16, KvDtype::kFP8}) {
    ModelConfig c;
    c.num_hidden_layers = 2;
    c.num_nextn_predict_layers = 0;
    c.compress_ratios = {4, 128};
    c.head_dim = 512;
    c.qk_rope_head_dim = 64;
    c.sliding_window = 128;
    c.index_head_dim = 128;
    const KvLayout layout = make_kv_layout(c, {dtype, IndexerKeyDtype::kFP4});
    const int64_t context = 65536;
    const int blocks = static_cast<int>(context / 256) + 1;
    const int heads = 64, topk = 512;
    for (const int64_t batch : {int64_t{1}, int64_t{16}, int64_t{64}}) {
      const int32_t pages = static_cast<int32_t>(blocks * batch);
      std::vector<DeviceBuffer<uint8_t>> window, compressed;
      for (int layer = 0; layer < 2; ++layer) {
        const LayerKvLayout& l = layout.layers[static_cast<size_t>(layer)];
        window.push_back(random_bytes(static_cast<size_t>(pages) * l.window_page_bytes, 0x37, 0));
        compressed.push_back(random_bytes(static_cast<size_t>(pages) * l.compressed_page_bytes, 0x37, 0));
      }
      // Sequence i uses pages [i * blocks, (i + 1) * blocks) in every pool; one decode row each.
      std::vector<int32_t> meta(batch * sizeof(ChunkInfo) / 4);
      std::vector<ChunkInfo> infos(static_cast<size_t>(batch));
      for (int64_t i = 0; i < batch; ++i) {
        ChunkInfo& info = infos[static_cast<size_t>(i)];
        info.first_row = static_cast<int32_t>(i);
        info.rows = 1;
        info.start_pos = static_cast<int32_t>(context - 1);
        info.window_table = static_cast<int32_t>(meta.size());
        info.window_blocks = blocks;
        for (int b = 0; b < blocks; ++b) meta.push_back(static_cast<int32_t>(i * blocks + b));
        for (int pool = 0; pool < 2; ++pool) {
          info.compressed_table[pool] = static_cast<int32_t>(meta.size());
          info.compressed_blocks[pool] = blocks;
          for (int b = 0; b < blocks; ++b) meta.push_back(static_cast<int32_t>(i * blocks + b));
        }
      }
      std::memcpy(meta.data(), infos.data(), infos.size() * sizeof(ChunkInfo));
      const size_t positions_at = meta.size();
      for (int64_t i = 0; i < batch; ++i) meta.push_back(static_cast<int32_t>(context - 1));
      const size_t chunk_at = meta.size();
      for (int64_t i = 0; i < batch; ++i) meta.push_back(static_cast<int32_t>(i));
      DeviceBuffer<int32_t> dmeta = to_device(meta);
      BatchView view{reinterpret_cast<const ChunkInfo*>(dmeta.data()), static_cast<int>(batch), dmeta.data(),
                     dmeta.data() + positions_at, dmeta.data() + chunk_at, batch};
      DeviceBuffer<float> q = random_floats(static_cast<size_t>(batch * heads * 512));
      DeviceBuffer<float> fresh = random_floats(static_cast<size_t>(batch * 512));
      DeviceBuffer<float> sinks = random_floats(heads);
      DeviceBuffer<float> freq = random_floats(32);
      DeviceBuffer<float> out(static_cast<size_t>(batch * heads * 512));
      DeviceBuffer<float> attention_workspace(size_t{64} << 20);
      std::vector<int32_t> selected(static_cast<size_t>(batch * topk)), counts(static_cast<size_t>(batch), topk);
      for (int64_t i = 0; i < batch * topk; ++i) selected[static_cast<size_t>(i)] = static_cast<int32_t>((i % topk) * 31);
      DeviceBuffer<int32_t> dsel = to_device(selected), dcounts = to_device(counts);
      const KvLayerView kv4 = make_kv_layer_view(layout, 0, window[0].data(), compressed[0].data());
      const KvLayerView kv128 = make_kv_layer_view(layout, 1, window[1].data(), compressed[1].data());
      const double kv_bytes = static_cast<double>(layout.layers[0].kv_entry_bytes);
      double ms = time_ms([&] {
        sparse_attention(kv4, view, q.data(), fresh.data(), sinks.data(), dsel.data(), dcounts.data(), topk, heads, 128,
                         640, freq.data(), out.data(), attention_workspace.data(), attention_workspace.size(), nullptr);
      });
      const double keys = 128 + topk;
      report(std::string("attention decode c4 (") + to_string(dtype) + ") batch " + std::to_string(batch) + ", 640 keys",
             ms, static_cast<double>(batch) * (keys * kv_bytes + 2.0 * heads * 512 * 4),
             static_cast<double>(batch) * 4.0 * heads * 512 * keys);
      ms = time_ms([&] {
        sparse_attention(kv128, view, q.data(), fresh.data(), sinks.data(), nullptr, dcounts.data(), topk, heads, 128,
                         640, freq.data(), out.data(), attention_workspace.data(), attention_workspace.size(), nullptr);
      });
      report(std::string("attention decode c128 (") + to_string(dtype) + ") batch " + std::to_string(batch) + ", 640 keys",
             ms, static_cast<double>(batch) * (keys * kv_bytes + 2.0 * heads * 512 * 4),
             static_cast<double>(batch) * 4.0 * heads * 512 * keys);
      // Indexer: 16384 visible entries per row, 64 heads of 128, fp4 keys.
      const int64_t visible = context / 4;
      DeviceBuffer<float> iq = random_floats(static_cast<size_t>(batch * 64 * 128));
      DeviceBuffer<float> iw = random_floats(static_cast<size_t>(batch * 64));
      DeviceBuffer<float> scores(static_cast<size_t>(batch * visible));
      ms = time_ms([&] {
        indexer_scores(kv4, view, 0, batch, iq.data(), iw.data(), 64, 128, scores.data(), visible, visible, nullptr);
      });
      report("indexer scores batch " + std::to_string(batch) + ", 16384 fp4 keys", ms,
             static_cast<double>(batch) * static_cast<double>(visible) * static_cast<double>(layout.layers[0].indexer_key_bytes),
             static_cast<double>(batch) * 2.0 * 64 * 128 * static_cast<double>(visible));
      ms = time_ms([&] {
        topk_rows(scores.data(), visible, view.row_pos, 0, batch, 4, topk, dsel.data(), dcounts.data(), nullptr);
      });
      report("top-512 of 16384 batch " + std::to_string(batch), ms, static_cast<double>(batch * visible) * 4.0, 0);
    }
  }

  // Hyper-connection pre (Flash hidden 4096, hc 4).
  {
    const int64_t hidden = 4096, hc = 4;
    DeviceBuffer<float> fn = random_floats(static_cast<size_t>(24 * hc * hidden)), base = random_floats(24),
                        scale = random_floats(3), norm = random_floats(static_cast<size_t>(hidden));
    for (const int64_t rows : {int64_t{1}, int64_t{64}, int64_t{4096}}) {
      DeviceBuffer<float> streams = random_floats(static_cast<size_t>(rows * hc * hidden));
      DeviceBuffer<float> y(static_cast<size_t>(rows * hidden)), post(static_cast<size_t>(rows * hc)),
          comb(static_cast<size_t>(rows * hc * hc));
      DeviceBuffer<float> hc_scratch(hc_workspace_floats(rows, 4, hidden));
      const double ms = time_ms([&] {
        hc_pre({fn.data(), base.data(), scale.data()}, streams.data(), rows, 4, hidden, 20, 1e-6f, 1e-6f, norm.data(),
               y.data(), post.data(), comb.data(), hc_scratch.data(), nullptr);
      });
      report("hc_pre rows " + std::to_string(rows), ms, 4.0 * static_cast<double>(rows * (hc + 1) * hidden + 24 * hc * hidden),
             2.0 * 25.0 * static_cast<double>(rows * hc * hidden));
    }
  }
  return 0;
}

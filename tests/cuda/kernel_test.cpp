// Every CUDA kernel family against the CPU reference op, on random inputs.
//
// Tolerances (relative to the largest reference magnitude unless said):
//  - fp32 arithmetic in another order (linears, norms, hyper-connections, indexer scores,
//    attention): 1e-5 (2e-5 for long reductions);
//  - exact: fp8 activation simulation, embedding, RoPE (same fp32 products, double cos/sin),
//    top-k index sets (ties to the lower index), MoE routing choices, batch invariance of the
//    linears (bitwise);
//  - outputs that pass through fp8/fp4 rounding after an fp32 reduction (kv, indexer queries,
//    compressed entries, MoE after the SwiGLU requantization): >= 99% of elements within 1e-5,
//    the rest off by at most one quantization step (max error bounded per test).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <set>

#include "common/block_quant.h"
#include "cpu/cpu_attention.h"
#include "cpu/cpu_compressor.h"
#include "cpu/cpu_hyper_connection.h"
#include "cpu/cpu_kv_storage.h"
#include "cpu/cpu_layer_context.h"
#include "cpu/cpu_linear.h"
#include "cpu/cpu_moe.h"
#include "cpu/cpu_ops.h"
#include "cuda/kernels.h"
#include "cuda/kv_view.h"
#include "kv/kv_entry_codec.h"
#include "model/rope.h"
#include "test_util.h"

namespace longctx {
namespace {

using cuda::DeviceBuffer;
using cuda::to_device;
using cuda_test::download;
using cuda_test::same_bits;
using cuda_test::fraction_close;
using cuda_test::HostLinear;
using cuda_test::random_floats;
using cuda_test::random_linear;
using cuda_test::relative_error;

struct DeviceLinear {
  DeviceBuffer<uint8_t> weight, scale;
  cuda::LinearView view;
};

int code_of(WeightFormat f) { return static_cast<int>(f); }

DeviceLinear upload(const HostLinear& h) {
  DeviceLinear d;
  d.weight = to_device(h.weight);
  if (!h.scale.empty()) d.scale = to_device(h.scale);
  d.view = {d.weight.data(), d.scale.data(), code_of(h.w.format), h.w.out, h.w.in, 0, 0};
  return d;
}

struct Workspace {
  DeviceBuffer<float> partial{size_t{4} << 20};
  cuda::LinearWorkspace view() { return {partial.data(), partial.size(), 132}; }
};

const char* format_name(WeightFormat f) { return to_string(f); }

// ---------------------------------------------------------------- linear

TEST(CudaLinear, MatchesCpuForEveryFormatAndBatchSize) {
  Workspace workspace;
  for (const WeightFormat format : {WeightFormat::kBF16, WeightFormat::kFP8, WeightFormat::kFP4}) {
    for (const auto& [out, in] : {std::pair<int64_t, int64_t>{200, 384}, {8192, 512}}) {
      const HostLinear w = random_linear(format, out, in, 7);
      const DeviceLinear d = upload(w);
      const int64_t max_rows = 70;
      const std::vector<float> x = random_floats(static_cast<size_t>(max_rows * in), 1.0f, 11);
      const DeviceBuffer<float> dx = to_device(x);
      std::vector<float> first_row;
      for (const int64_t rows : {1, 3, 16, 17, 70}) {
        DeviceBuffer<float> dy(static_cast<size_t>(rows * out));
        cuda::linear(d.view, dx.data(), in, rows, dy.data(), out, 0, workspace.view(), nullptr);
        const std::vector<float> y = download(dy, dy.size());
        std::vector<float> ref(static_cast<size_t>(rows * out));
        cpu::linear(w.w, x.data(), rows, ref.data());
        const double error = relative_error(y, ref);
        EXPECT_LE(error, 1e-5) << format_name(format) << " " << out << "x" << in << " rows " << rows;
        std::printf("linear %s [%lld x %lld] rows %lld: relative error %.3g\n", format_name(format),
                    static_cast<long long>(out), static_cast<long long>(in), static_cast<long long>(rows), error);
        // Batch invariance: row 0 has the same bits at every batch size (tile shape, split-K).
        if (first_row.empty()) {
          first_row.assign(y.begin(), y.begin() + out);
        } else {
          EXPECT_TRUE(std::equal(first_row.begin(), first_row.end(), y.begin()))
              << format_name(format) << " rows " << rows;
        }
      }
    }
  }
}

TEST(CudaLinear, GroupedInputMatchesCpuGrouped) {
  Workspace workspace;
  const int64_t groups = 4, per_group = 128, in = 256, rows = 9;
  const HostLinear w = random_linear(WeightFormat::kFP8, groups * per_group, in, 3);
  const DeviceLinear d = upload(w);
  const std::vector<float> x = random_floats(static_cast<size_t>(rows * groups * in), 1.0f, 5);
  const DeviceBuffer<float> dx = to_device(x);
  DeviceBuffer<float> dy(static_cast<size_t>(rows * groups * per_group));
  cuda::linear(d.view, dx.data(), groups * in, rows, dy.data(), groups * per_group, per_group, workspace.view(), nullptr);
  std::vector<float> ref(dy.size());
  cpu::linear_grouped(w.w, groups, x.data(), rows, ref.data());
  const double error = relative_error(download(dy, dy.size()), ref);
  std::printf("grouped wo_a linear: relative error %.3g\n", error);
  EXPECT_LE(error, 1e-5);
}

TEST(CudaLinear, ExpertGroupsMatchCpu) {
  Workspace workspace;
  const int experts = 5;
  const int64_t out = 256, in = 512, rows = 23;
  std::vector<HostLinear> hosts;
  std::vector<uint8_t> weights, scales;
  for (int e = 0; e < experts; ++e) {
    hosts.push_back(random_linear(WeightFormat::kFP4, out, in, 100 + static_cast<uint32_t>(e)));
    weights.insert(weights.end(), hosts.back().weight.begin(), hosts.back().weight.end());
    scales.insert(scales.end(), hosts.back().scale.begin(), hosts.back().scale.end());
  }
  const DeviceBuffer<uint8_t> dw = to_device(weights);
  const DeviceBuffer<uint8_t> ds = to_device(scales);
  const cuda::LinearView view{dw.data(), ds.data(), cuda::kWeightFP4, out, in,
                              static_cast<int64_t>(hosts[0].weight.size()), static_cast<int64_t>(hosts[0].scale.size())};
  // Slots grouped by expert: expert e gets rows e, e + experts, ... (expert 3 gets none).
  std::vector<int32_t> offsets, counts, slot_rows, slot_expert;
  for (int e = 0; e < experts; ++e) {
    offsets.push_back(static_cast<int32_t>(slot_rows.size()));
    for (int64_t r = e; r < rows && e != 3; r += experts) {
      slot_rows.push_back(static_cast<int32_t>(r));
      slot_expert.push_back(e);
    }
    counts.push_back(static_cast<int32_t>(slot_rows.size()) - offsets.back());
  }
  const std::vector<float> x = random_floats(static_cast<size_t>(rows * in), 1.0f, 9);
  const DeviceBuffer<float> dx = to_device(x);
  const DeviceBuffer<int32_t> doffsets = to_device(offsets), dcounts = to_device(counts), drows = to_device(slot_rows);
  DeviceBuffer<float> dy(slot_rows.size() * static_cast<size_t>(out));
  cuda::grouped_linear(view, experts, doffsets.data(), dcounts.data(), static_cast<int64_t>(slot_rows.size()), dx.data(),
                       in, drows.data(), dy.data(), out, workspace.view(), nullptr);
  const std::vector<float> y = download(dy, dy.size());
  std::vector<float> ref(y.size());
  for (size_t s = 0; s < slot_rows.size(); ++s) {
    cpu::linear(hosts[static_cast<size_t>(slot_expert[s])].w, x.data() + slot_rows[s] * in, 1, ref.data() + s * out);
  }
  const double error = relative_error(y, ref);
  std::printf("grouped expert linear (fp4): relative error %.3g\n", error);
  EXPECT_LE(error, 1e-5);
  // Blocks for the busy groups only (expert 3 has no rows): the same bits.
  const DeviceBuffer<int32_t> busy = to_device(std::vector<int32_t>{0, 1, 2, 4, -1});
  DeviceBuffer<float> dz(dy.size());
  cuda::grouped_linear(view, experts, doffsets.data(), dcounts.data(), static_cast<int64_t>(slot_rows.size()), dx.data(),
                       in, drows.data(), dz.data(), out, workspace.view(), nullptr, busy.data());
  EXPECT_EQ(download(dz, dz.size()), y);
}

// The GEMV path (rows <= 8, per expert group on average) against the tiled kernel, bit for bit:
// the same fma chains per 256-chunk and the same in-order chunk sums. Covers every weight format,
// `in` not a multiple of 256, several K stages, outputs not a multiple of the output tile, row
// strides, the grouped wo_a input, expert groups (row gather, busy-group list, groups with more
// rows than one pass) and extreme scales (fp4 scale bytes above 240 take the other decode).
TEST(CudaLinear, GemvMatchesTiledBitwise) {
  Workspace workspace;
  cuda::LinearWorkspace gemv = workspace.view();
  cuda::LinearWorkspace tiled = workspace.view();
  tiled.gemv_max_rows = 0;
  struct Shape {
    int64_t out, in;
  };
  int cases = 0;
  for (const WeightFormat format : {WeightFormat::kBF16, WeightFormat::kFP8, WeightFormat::kFP4}) {
    for (const Shape shape : {Shape{200, 384}, Shape{37, 1056}, Shape{1000, 4096}, Shape{4096, 1024},
                              Shape{96, 9216}}) {
      const int64_t out = shape.out, in = shape.in;
      HostLinear w = random_linear(format, out, in, static_cast<uint32_t>(31 + out + in));
      if (format == WeightFormat::kFP4 && out == 200) {  // scales across the three fp4 decodes
        const uint8_t edges[] = {0, 1, 104, 105, 128, 129, 200, 240, 241, 250, 254};
        for (size_t i = 0; i < w.scale.size(); i += 5) w.scale[i] = edges[(i / 5) % std::size(edges)];
      }
      if (format == WeightFormat::kFP8 && out == 200) w.scale[1] = 0;
      const DeviceLinear d = upload(w);
      const int64_t x_stride = in + 32, y_stride = out + 3;
      const std::vector<float> x = random_floats(static_cast<size_t>(8 * x_stride), 1.0f, 12);
      const DeviceBuffer<float> dx = to_device(x);
      for (int64_t rows = 1; rows <= 8; ++rows) {
        DeviceBuffer<float> y1(static_cast<size_t>(rows * y_stride)), y2(y1.size());
        LONGCTX_CUDA_CHECK(cudaMemset(y1.data(), 0xff, y1.size() * sizeof(float)));
        LONGCTX_CUDA_CHECK(cudaMemset(y2.data(), 0xff, y2.size() * sizeof(float)));
        cuda::linear(d.view, dx.data(), x_stride, rows, y1.data(), y_stride, 0, gemv, nullptr);
        cuda::linear(d.view, dx.data(), x_stride, rows, y2.data(), y_stride, 0, tiled, nullptr);
        const std::vector<float> a = download(y1, y1.size()), b = download(y2, y2.size());
        EXPECT_TRUE(same_bits(a, b)) << format_name(format) << " [" << out << " x " << in << "] rows " << rows;
        ++cases;
        if (rows == 3 && !(out == 200 && format != WeightFormat::kBF16)) {  // and the CPU reference
          std::vector<float> xs(static_cast<size_t>(rows * in)), ref(static_cast<size_t>(rows * out)), ys(ref.size());
          for (int64_t r = 0; r < rows; ++r) {
            std::copy_n(x.begin() + r * x_stride, in, xs.begin() + r * in);
            std::copy_n(a.begin() + r * y_stride, out, ys.begin() + r * out);
          }
          cpu::linear(w.w, xs.data(), rows, ref.data());
          EXPECT_LE(relative_error(ys, ref), 1e-5) << format_name(format) << " [" << out << " x " << in << "]";
        }
      }
    }
  }
  // Grouped wo_a: output o reads the input slice of group o / per_group (the tiled kernel needs
  // groups of a multiple of 128 outputs).
  for (const int64_t per_group : {128, 256}) {
    const int64_t groups = 512 / per_group, in = 512;
    const HostLinear w = random_linear(WeightFormat::kFP8, groups * per_group, in, 77);
    const DeviceLinear d = upload(w);
    const std::vector<float> x = random_floats(static_cast<size_t>(8 * groups * in), 1.0f, 78);
    const DeviceBuffer<float> dx = to_device(x);
    for (int64_t rows = 1; rows <= 8; ++rows) {
      DeviceBuffer<float> y1(static_cast<size_t>(rows * groups * per_group)), y2(y1.size());
      cuda::linear(d.view, dx.data(), groups * in, rows, y1.data(), groups * per_group, per_group, gemv, nullptr);
      cuda::linear(d.view, dx.data(), groups * in, rows, y2.data(), groups * per_group, per_group, tiled, nullptr);
      EXPECT_TRUE(same_bits(download(y1, y1.size()), download(y2, y2.size())))
          << "grouped wo_a, " << per_group << " outputs per group, rows " << rows;
      ++cases;
    }
  }
  // Expert groups: each of `tokens` tokens picks 3 of 7 experts; slot rows gathered from x.
  std::mt19937 random(5);
  for (const WeightFormat format : {WeightFormat::kFP4, WeightFormat::kFP8, WeightFormat::kBF16}) {
    const int experts = 7, k = 3;
    const int64_t out = format == WeightFormat::kFP4 ? 256 : 136, in = format == WeightFormat::kFP4 ? 1024 : 640;
    std::vector<HostLinear> hosts;
    std::vector<uint8_t> weights, scales;
    for (int e = 0; e < experts; ++e) {
      hosts.push_back(random_linear(format, out, in, 300 + static_cast<uint32_t>(e)));
      weights.insert(weights.end(), hosts.back().weight.begin(), hosts.back().weight.end());
      scales.insert(scales.end(), hosts.back().scale.begin(), hosts.back().scale.end());
    }
    const DeviceBuffer<uint8_t> dw = to_device(weights);
    DeviceBuffer<uint8_t> ds;
    if (!scales.empty()) ds = to_device(scales);
    const cuda::LinearView view{dw.data(), ds.data(), code_of(format), out, in,
                                static_cast<int64_t>(hosts[0].weight.size()), static_cast<int64_t>(hosts[0].scale.size())};
    for (const int64_t tokens : {1, 2, 3, 8, 13}) {
      std::vector<std::vector<int32_t>> members(experts);
      for (int64_t t = 0; t < tokens; ++t) {
        std::vector<int32_t> pool(experts);
        std::iota(pool.begin(), pool.end(), 0);
        std::shuffle(pool.begin(), pool.end(), random);
        for (int j = 0; j < k; ++j) members[static_cast<size_t>(pool[static_cast<size_t>(j)])].push_back(static_cast<int32_t>(t));
      }
      std::vector<int32_t> offsets, counts, slot_rows, busy;
      for (int e = 0; e < experts; ++e) {
        offsets.push_back(static_cast<int32_t>(slot_rows.size()));
        counts.push_back(static_cast<int32_t>(members[static_cast<size_t>(e)].size()));
        if (counts.back() > 0) busy.push_back(e);
        slot_rows.insert(slot_rows.end(), members[static_cast<size_t>(e)].begin(), members[static_cast<size_t>(e)].end());
      }
      busy.resize(experts, -1);
      const int64_t slots = static_cast<int64_t>(slot_rows.size());
      const std::vector<float> x = random_floats(static_cast<size_t>(tokens * in), 1.0f, 400 + static_cast<uint32_t>(tokens));
      const DeviceBuffer<float> dx = to_device(x);
      const DeviceBuffer<int32_t> doffsets = to_device(offsets), dcounts = to_device(counts), drows = to_device(slot_rows),
                                  dbusy = to_device(busy);
      std::vector<float> reference;
      for (const bool with_list : {false, true}) {
        for (const bool use_gemv : {true, false}) {
          DeviceBuffer<float> y(static_cast<size_t>(slots * out));
          LONGCTX_CUDA_CHECK(cudaMemset(y.data(), 0xff, y.size() * sizeof(float)));
          cuda::grouped_linear(view, experts, doffsets.data(), dcounts.data(), slots, dx.data(), in, drows.data(), y.data(),
                               out, use_gemv ? gemv : tiled, nullptr, with_list ? dbusy.data() : nullptr);
          const std::vector<float> result = download(y, y.size());
          if (reference.empty()) {
            reference = result;
            std::vector<float> ref(result.size());
            for (int e = 0, s = 0; e < experts; ++e) {
              for (int32_t i = 0; i < counts[static_cast<size_t>(e)]; ++i, ++s) {
                cpu::linear(hosts[static_cast<size_t>(e)].w, x.data() + slot_rows[static_cast<size_t>(s)] * in, 1,
                            ref.data() + s * out);
              }
            }
            EXPECT_LE(relative_error(result, ref), 1e-5) << format_name(format) << " experts, tokens " << tokens;
          } else {
            EXPECT_TRUE(same_bits(result, reference)) << format_name(format) << " experts, tokens " << tokens
                                                      << (with_list ? ", busy list" : "") << (use_gemv ? ", gemv" : ", tiled");
          }
          ++cases;
        }
      }
    }
  }
  std::printf("gemv vs tiled: %d cases compared bit for bit\n", cases);
}

TEST(CudaQuant, Fp8ActivationSimulationIsExact) {
  const int64_t rows = 7, cols = 512;
  std::vector<float> x = random_floats(static_cast<size_t>(rows * cols), 3.0f, 21);
  for (size_t i = 0; i < x.size(); i += 37) x[i] *= 1e-6f;
  std::fill(x.begin() + 128, x.begin() + 256, 0.0f);  // an all-zero block
  const DeviceBuffer<float> dx = to_device(x);
  DeviceBuffer<float> dy(x.size());
  cuda::fp8_simulate_rows(dx.data(), rows, cols, cols, dy.data(), cols, nullptr);
  std::vector<float> ref = x;
  for (int64_t r = 0; r < rows; ++r) fp8_simulate_blocks(ref.data() + r * cols, static_cast<size_t>(cols), 128);
  EXPECT_EQ(download(dy, dy.size()), ref);
}

// ---------------------------------------------------------------- norms, embedding, rope

TEST(CudaNorm, RmsNormAndEmbedding) {
  const int64_t rows = 5, n = 1000;
  const std::vector<float> x = random_floats(static_cast<size_t>(rows * n), 2.0f, 1);
  const std::vector<float> weight = random_floats(static_cast<size_t>(n), 1.0f, 2);
  const DeviceBuffer<float> dx = to_device(x), dw = to_device(weight);
  DeviceBuffer<float> dy(x.size());
  cuda::rms_norm_rows(dx.data(), rows, n, n, dw.data(), 1e-6f, dy.data(), nullptr);
  std::vector<float> ref(x.size());
  for (int64_t r = 0; r < rows; ++r) cpu::rms_norm(x.data() + r * n, weight.data(), static_cast<size_t>(n), 1e-6f, ref.data() + r * n);
  const double error = relative_error(download(dy, dy.size()), ref);
  std::printf("rms_norm: relative error %.3g\n", error);
  EXPECT_LE(error, 1e-6);

  const HostLinear table = random_linear(WeightFormat::kBF16, 50, 96, 4);
  const DeviceBuffer<uint8_t> dtable = to_device(table.weight);
  const std::vector<int32_t> tokens = {3, 49, 0, 3};
  const DeviceBuffer<int32_t> dtokens = to_device(tokens);
  DeviceBuffer<float> embedded(tokens.size() * 2 * 96);
  cuda::embedding(reinterpret_cast<const uint16_t*>(dtable.data()), 96, dtokens.data(), 4, 2, embedded.data(), nullptr);
  std::vector<float> expected;
  std::vector<float> row(96);
  for (const int32_t t : tokens) {
    table.w.decode_row(t, row.data());
    for (int copy = 0; copy < 2; ++copy) expected.insert(expected.end(), row.begin(), row.end());
  }
  EXPECT_EQ(download(embedded, embedded.size()), expected);
}

ModelConfig small_config() {
  ModelConfig c;
  c.hidden_size = 256;
  c.num_hidden_layers = 1;
  c.num_nextn_predict_layers = 0;
  c.num_attention_heads = 10;
  c.head_dim = 512;
  c.qk_rope_head_dim = 64;
  c.sliding_window = 16;
  c.compress_ratios = {4};
  c.index_n_heads = 6;
  c.index_head_dim = 128;
  c.index_topk = 8;
  c.compress_rope_theta = 160000;
  c.rope_scaling = {true, 16.0, 65536, 32.0, 1.0};
  c.rms_norm_eps = 1e-6;
  c.hc_mult = 4;
  return c;
}

TEST(CudaRope, RotationsMatchRopeTable) {
  const ModelConfig c = small_config();
  for (const int ratio : {0, 4}) {
    const RopeTable table = RopeTable::for_layer(c, ratio);
    const DeviceBuffer<float> freq = to_device(table.inverse_frequencies());
    const std::vector<int32_t> positions = {0, 1, 17, 255, 4096, 65537, 1048575};
    const int64_t rows = static_cast<int64_t>(positions.size());
    const std::vector<float> x = random_floats(static_cast<size_t>(rows * 64), 1.0f, 8);
    const DeviceBuffer<int32_t> dpos = to_device(positions);
    for (const bool inverse : {false, true}) {
      DeviceBuffer<float> dx = to_device(x);
      cuda::rope_rows(dx.data(), rows, 64, 64, dpos.data(), freq.data(), inverse, nullptr);
      std::vector<float> ref = x;
      for (int64_t r = 0; r < rows; ++r) table.rotate(ref.data() + r * 64, positions[static_cast<size_t>(r)], inverse);
      EXPECT_EQ(download(dx, dx.size()), ref) << "ratio " << ratio << " inverse " << inverse;
    }
  }
}

TEST(CudaRope, QueryKvAndIndexerPreparationMatchCpu) {
  const ModelConfig c = small_config();
  const RopeTable table = RopeTable::for_layer(c, 4);
  const DeviceBuffer<float> freq = to_device(table.inverse_frequencies());
  const int64_t rows = 6;
  std::vector<int32_t> positions = {0, 5, 300, 301, 9000, 123456};
  const DeviceBuffer<int32_t> dpos = to_device(positions);
  const int heads = static_cast<int>(c.num_attention_heads);
  const int d = static_cast<int>(c.head_dim);
  const int nope = d - 64;
  // Queries.
  const std::vector<float> q = random_floats(static_cast<size_t>(rows * heads * d), 1.0f, 31);
  DeviceBuffer<float> dq = to_device(q);
  cuda::q_norm_rope(dq.data(), rows, heads, d, 64, dpos.data(), freq.data(), 1e-6f, nullptr);
  std::vector<float> ref = q;
  for (int64_t r = 0; r < rows; ++r) {
    for (int h = 0; h < heads; ++h) {
      float* head = ref.data() + (r * heads + h) * d;
      cpu::rms_norm(head, nullptr, static_cast<size_t>(d), 1e-6f, head);
      table.rotate(head + nope, positions[static_cast<size_t>(r)], false);
    }
  }
  double error = relative_error(download(dq, dq.size()), ref);
  std::printf("q norm+rope: relative error %.3g\n", error);
  EXPECT_LE(error, 1e-6);
  // KV vectors, for each storage dtype.
  const std::vector<float> kv = random_floats(static_cast<size_t>(rows * d), 1.0f, 32);
  const std::vector<float> norm = random_floats(static_cast<size_t>(d), 1.0f, 33);
  const DeviceBuffer<float> dnorm = to_device(norm);
  for (const KvDtype dtype : {KvDtype::kF32, KvDtype::kBF16, KvDtype::kFP8}) {
    DeviceBuffer<float> dkv = to_device(kv);
    cuda::kv_norm_rope_quant(dkv.data(), rows, d, 64, dnorm.data(), dpos.data(), freq.data(), 1e-6f,
                             static_cast<int>(dtype), nullptr);
    std::vector<float> expected = kv;
    const KvEntryCodec codec{dtype, d, 64};
    for (int64_t r = 0; r < rows; ++r) {
      float* v = expected.data() + r * d;
      cpu::rms_norm(v, norm.data(), static_cast<size_t>(d), 1e-6f, v);
      table.rotate(v + nope, positions[static_cast<size_t>(r)], false);
      fp8_simulate_blocks(v, static_cast<size_t>(nope), 64);
      codec.round_trip(v);
    }
    const std::vector<float> got = download(dkv, dkv.size());
    const double close = fraction_close(got, expected, 1e-5);
    error = relative_error(got, expected);
    std::printf("kv norm+rope+fp8 (%s): %.4f of elements within 1e-5, max relative error %.3g\n", to_string(dtype),
                close, error);
    EXPECT_GE(close, 0.99);
    EXPECT_LE(error, 0.07);  // one e4m3 step near the top of a block
  }
  // Indexer queries.
  const int ih = static_cast<int>(c.index_n_heads);
  const int id = static_cast<int>(c.index_head_dim);
  const std::vector<float> iq = random_floats(static_cast<size_t>(rows * ih * id), 1.0f, 34);
  const std::vector<float> iw = random_floats(static_cast<size_t>(rows * ih), 1.0f, 35);
  DeviceBuffer<float> diq = to_device(iq), diw = to_device(iw);
  cuda::indexer_q_prepare(diq.data(), diw.data(), rows, ih, id, 64, dpos.data(), freq.data(), 0.25f, nullptr);
  std::vector<float> expected_q = iq;
  std::vector<float> expected_w = iw;
  for (int64_t r = 0; r < rows; ++r) {
    for (int h = 0; h < ih; ++h) {
      float* head = expected_q.data() + (r * ih + h) * id;
      table.rotate(head + id - 64, positions[static_cast<size_t>(r)], false);
      cpu::hadamard_transform(head, static_cast<size_t>(id));
      fp4_simulate_blocks(head, static_cast<size_t>(id), 32);
      expected_w[static_cast<size_t>(r * ih + h)] *= 0.25f;
    }
  }
  const std::vector<float> got_q = download(diq, diq.size());
  EXPECT_EQ(got_q, expected_q);  // rope, butterflies and fp4 rounding are the same fp32 operations
  EXPECT_EQ(download(diw, diw.size()), expected_w);
}

// ---------------------------------------------------------------- hyper-connections

TEST(CudaHyperConnection, PrePostAndHeadMatchCpu) {
  ModelConfig c = small_config();
  c.hidden_size = 384;
  const int64_t rows = 5, hc = 4, hidden = c.hidden_size;
  const int64_t mix = (2 + hc) * hc;
  HyperConnectionWeights w{random_floats(static_cast<size_t>(mix * hc * hidden), 0.05f, 41),
                           random_floats(static_cast<size_t>(mix), 0.5f, 42), {0.7f, 1.3f, 0.9f}};
  HyperConnectionWeights head{random_floats(static_cast<size_t>(hc * hc * hidden), 0.05f, 43),
                              random_floats(static_cast<size_t>(hc), 0.5f, 44), {1.1f}};
  const std::vector<float> norm = random_floats(static_cast<size_t>(hidden), 1.0f, 45);
  const std::vector<float> streams = random_floats(static_cast<size_t>(rows * hc * hidden), 1.0f, 46);
  const DeviceBuffer<float> fn = to_device(w.fn), base = to_device(w.base), scale = to_device(w.scale);
  const DeviceBuffer<float> hfn = to_device(head.fn), hbase = to_device(head.base), hscale = to_device(head.scale);
  const DeviceBuffer<float> dnorm = to_device(norm);
  DeviceBuffer<float> dstreams = to_device(streams);
  DeviceBuffer<float> dy(static_cast<size_t>(rows * hidden)), dpost(static_cast<size_t>(rows * hc)),
      dcomb(static_cast<size_t>(rows * hc * hc));
  DeviceBuffer<float> hc_workspace(cuda::hc_workspace_floats(rows, static_cast<int>(hc), hidden));
  cuda::hc_pre({fn.data(), base.data(), scale.data()}, dstreams.data(), rows, hc, hidden, 20, 1e-6f, 1e-6f,
               dnorm.data(), dy.data(), dpost.data(), dcomb.data(), hc_workspace.data(), nullptr);
  std::vector<float> y(static_cast<size_t>(rows * hidden)), post(static_cast<size_t>(rows * hc)),
      comb(static_cast<size_t>(rows * hc * hc));
  cpu::hc_pre(w, c, streams.data(), rows, y.data(), post.data(), comb.data());
  for (int64_t r = 0; r < rows; ++r) cpu::rms_norm(y.data() + r * hidden, norm.data(), static_cast<size_t>(hidden), 1e-6f, y.data() + r * hidden);
  const double e_y = relative_error(download(dy, dy.size()), y);
  const double e_post = relative_error(download(dpost, dpost.size()), post);
  const double e_comb = relative_error(download(dcomb, dcomb.size()), comb);
  std::printf("hc_pre: y %.3g, post %.3g, comb %.3g\n", e_y, e_post, e_comb);
  EXPECT_LE(e_y, 1e-5);
  EXPECT_LE(e_post, 1e-5);
  EXPECT_LE(e_comb, 1e-5);
  // hc_post from the CPU's post/comb, so only the update itself is compared.
  const std::vector<float> sub = random_floats(static_cast<size_t>(rows * hidden), 1.0f, 47);
  const DeviceBuffer<float> dsub = to_device(sub);
  const DeviceBuffer<float> cpost = to_device(post), ccomb = to_device(comb);
  cuda::hc_post(dsub.data(), cpost.data(), ccomb.data(), rows, hc, hidden, dstreams.data(), nullptr);
  std::vector<float> updated = streams;
  cpu::hc_post(c, sub.data(), post.data(), comb.data(), rows, updated.data());
  const std::vector<float> got = download(dstreams, dstreams.size());
  EXPECT_EQ(got, updated);
  std::printf("hc_post: relative error %.3g\n", relative_error(got, updated));
  // Head, over a subset of rows.
  const std::vector<int32_t> picked = {4, 1};
  const DeviceBuffer<int32_t> dpicked = to_device(picked);
  DeviceBuffer<float> dhead(picked.size() * static_cast<size_t>(hidden));
  cuda::hc_head({hfn.data(), hbase.data(), hscale.data()}, dstreams.data(), dpicked.data(), 2, hc, hidden, 1e-6f, 1e-6f,
                dnorm.data(), dhead.data(), hc_workspace.data(), nullptr);
  std::vector<float> selected;
  for (const int32_t r : picked) selected.insert(selected.end(), updated.begin() + r * hc * hidden, updated.begin() + (r + 1) * hc * hidden);
  std::vector<float> ref(picked.size() * static_cast<size_t>(hidden));
  cpu::hc_head(head, c, selected.data(), 2, ref.data());
  for (int64_t r = 0; r < 2; ++r) cpu::rms_norm(ref.data() + r * hidden, norm.data(), static_cast<size_t>(hidden), 1e-6f, ref.data() + r * hidden);
  const double e_head = relative_error(download(dhead, dhead.size()), ref);
  std::printf("hc_head: relative error %.3g\n", e_head);
  EXPECT_LE(e_head, 1e-5);
}

// The prefill kernels of hc_pre (row-streaming mix partials, per-row Sinkhorn threads, weighted
// sum) and hc_post (16-byte vectors) against the first kernels, bitwise: 16 and 5 slices of 1024,
// row groups shorter than the copy ring, outputs poisoned before each run.
TEST(CudaHyperConnection, PrefillKernelsMatchReferenceKernelsBitwise) {
  const int hc = 4, mix = (2 + hc) * hc;
  for (const int64_t hidden : {int64_t{4096}, int64_t{1280}}) {
    for (const int64_t rows : {int64_t{256}, int64_t{1000}}) {
      const int64_t n = hc * hidden;
      DeviceBuffer<float> fn(static_cast<size_t>(mix * n)), base(static_cast<size_t>(mix)), scale(3),
          norm(static_cast<size_t>(hidden)), streams(static_cast<size_t>(rows * n)), out(static_cast<size_t>(rows * hidden));
      const uint64_t seed = static_cast<uint64_t>(hidden + rows);
      cuda::fill_floats_random(fn.data(), static_cast<int64_t>(fn.size()), 0.0f, 0.02f, seed + 1, nullptr);
      cuda::fill_floats_random(base.data(), mix, 0.0f, 0.5f, seed + 2, nullptr);
      cuda::fill_floats_random(scale.data(), 3, 1.0f, 0.3f, seed + 3, nullptr);
      cuda::fill_floats_random(norm.data(), hidden, 1.0f, 0.2f, seed + 4, nullptr);
      cuda::fill_floats_random(streams.data(), static_cast<int64_t>(streams.size()), 0.0f, 1.0f, seed + 5, nullptr);
      cuda::fill_floats_random(out.data(), static_cast<int64_t>(out.size()), 0.0f, 1.0f, seed + 6, nullptr);
      std::vector<float> results[2][3];
      std::vector<float> updated[2];
      for (int side = 0; side < 2; ++side) {
        const bool reference = side == 1;
        DeviceBuffer<float> y(static_cast<size_t>(rows * hidden)), post(static_cast<size_t>(rows * hc)),
            comb(static_cast<size_t>(rows * hc * hc));
        DeviceBuffer<float> workspace(cuda::hc_workspace_floats(rows, hc, hidden));
        for (DeviceBuffer<float>* b : {&y, &post, &comb, &workspace}) {
          LONGCTX_CUDA_CHECK(cudaMemset(b->data(), 0xff, b->size() * sizeof(float)));  // NaN
        }
        cuda::hc_pre({fn.data(), base.data(), scale.data()}, streams.data(), rows, hc, hidden, 20, 1e-6f, 1e-6f,
                     norm.data(), y.data(), post.data(), comb.data(), workspace.data(), nullptr, reference);
        results[side][0] = download(y, y.size());
        results[side][1] = download(post, post.size());
        results[side][2] = download(comb, comb.size());
        DeviceBuffer<float> copy(streams.size());
        LONGCTX_CUDA_CHECK(cudaMemcpy(copy.data(), streams.data(), streams.size() * sizeof(float), cudaMemcpyDeviceToDevice));
        cuda::hc_post(out.data(), post.data(), comb.data(), rows, hc, hidden, copy.data(), nullptr, reference);
        updated[side] = download(copy, copy.size());
      }
      for (int k = 0; k < 3; ++k) {
        const std::vector<float>& a = results[0][k];
        const std::vector<float>& b = results[1][k];
        EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "output " << k << " hidden " << hidden << " rows " << rows;
        EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](float x) { return std::isfinite(x); })) << "output " << k;
      }
      EXPECT_EQ(0, std::memcmp(updated[0].data(), updated[1].data(), updated[0].size() * sizeof(float)))
          << "hc_post hidden " << hidden << " rows " << rows;
      std::printf("hc prefill kernels, hidden %lld rows %lld: y/post/comb/streams bitwise equal to the first kernels: %d/%d/%d/%d\n",
                  static_cast<long long>(hidden), static_cast<long long>(rows),
                  results[0][0] == results[1][0], results[0][1] == results[1][1], results[0][2] == results[1][2],
                  updated[0] == updated[1]);
    }
  }
}

// ---------------------------------------------------------------- paged KV helpers

// One layer's pages on host and device, with a one-chunk batch on the device.
struct PagedLayer {
  ModelConfig config;
  KvLayout layout;
  KvPoolSizes sizes;
  CpuKvStorage storage;
  BlockTables tables;
  DeviceBuffer<uint8_t> window, compressed;
  DeviceBuffer<int32_t> meta;
  cuda::BatchView batch;

  PagedLayer(const ModelConfig& c, KvCacheOptions options, int blocks)
      : config(c), layout(make_kv_layout(c, options)), sizes{blocks + 1, {blocks + 1}},
        storage(layout, sizes) {
    for (int b = 0; b < blocks; ++b) {
      tables.window.push_back(blocks - b);  // pages out of order, to catch table mistakes
      tables.compressed.push_back({});
    }
    tables.compressed.resize(1);
    tables.compressed[0].clear();
    for (int b = 0; b < blocks; ++b) tables.compressed[0].push_back((b + 1) % (blocks + 1));
  }
  const LayerKvLayout& l() const { return layout.layers[0]; }

  // Copies the CPU pages to the device (after the host filled them).
  void upload_pages() {
    const size_t wbytes = static_cast<size_t>(sizes.window_pages) * l().window_page_bytes;
    const size_t cbytes = static_cast<size_t>(sizes.compressed_pages[0]) * l().compressed_page_bytes;
    window.resize(wbytes);
    compressed.resize(cbytes);
    window.upload(storage.window_page(0, 0), wbytes);
    compressed.upload(storage.compressed_page(0, 0), cbytes);
  }
  std::vector<uint8_t> device_window() { return download(window, window.size()); }
  std::vector<uint8_t> device_compressed() { return download(compressed, compressed.size()); }

  // A batch of one chunk: rows [0, rows) at positions start .. start + rows - 1.
  void set_batch(int32_t start, int32_t rows) {
    cuda::ChunkInfo info;
    info.first_row = 0;
    info.rows = rows;
    info.start_pos = start;
    std::vector<int32_t> ints(sizeof(cuda::ChunkInfo) / 4);
    const int32_t window_at = static_cast<int32_t>(ints.size());
    ints.insert(ints.end(), tables.window.begin(), tables.window.end());
    const int32_t compressed_at = static_cast<int32_t>(ints.size());
    ints.insert(ints.end(), tables.compressed[0].begin(), tables.compressed[0].end());
    info.window_table = window_at;
    info.window_blocks = static_cast<int32_t>(tables.window.size());
    info.compressed_table[0] = compressed_at;
    info.compressed_blocks[0] = static_cast<int32_t>(tables.compressed[0].size());
    std::memcpy(ints.data(), &info, sizeof(info));
    const int32_t positions_at = static_cast<int32_t>(ints.size());
    for (int32_t r = 0; r < rows; ++r) ints.push_back(start + r);
    const int32_t chunk_at = static_cast<int32_t>(ints.size());
    for (int32_t r = 0; r < rows; ++r) ints.push_back(0);
    meta = to_device(ints);
    batch.chunks = reinterpret_cast<const cuda::ChunkInfo*>(meta.data());
    batch.num_chunks = 1;
    batch.tables = meta.data();
    batch.row_pos = meta.data() + positions_at;
    batch.row_chunk = meta.data() + chunk_at;
    batch.rows = rows;
  }
  cuda::KvLayerView view() { return cuda::make_kv_layer_view(layout, 0, window.data(), compressed.data()); }
  cpu::ChunkView chunk(int64_t start, int64_t rows) const { return {0, rows, start, &tables}; }
};

// ---------------------------------------------------------------- indexer

TEST(CudaIndexer, ScoresMatchCpu) {
  const ModelConfig c = small_config();
  for (const IndexerKeyDtype dtype : {IndexerKeyDtype::kF32, IndexerKeyDtype::kBF16, IndexerKeyDtype::kFP4}) {
    PagedLayer paged(c, {KvDtype::kF32, dtype}, 3);
    const RopeTable rope = RopeTable::for_layer(c, 4);
    AttentionWeights weights;
    const cpu::LayerContext ctx(c, weights, paged.l(), rope, paged.storage, paged.layout.options);
    const int64_t entries = 3 * 256 / 4;
    const int dim = static_cast<int>(c.index_head_dim);
    const cpu::ChunkView chunk = paged.chunk(700, 5);
    for (int64_t e = 0; e < entries; ++e) {
      std::vector<float> key = random_floats(static_cast<size_t>(dim), 1.0f, 500 + static_cast<uint32_t>(e));
      fp4_simulate_blocks(key.data(), static_cast<size_t>(dim), 32);
      ctx.key_codec.encode(key.data(), ctx.key_bytes(chunk, e));
    }
    paged.upload_pages();
    paged.set_batch(700, 5);
    const int heads = static_cast<int>(c.index_n_heads);
    const std::vector<float> q = random_floats(static_cast<size_t>(5 * heads * dim), 1.0f, 61);
    const std::vector<float> w = random_floats(static_cast<size_t>(5 * heads), 1.0f, 62);
    const DeviceBuffer<float> dq = to_device(q), dw = to_device(w);
    const int64_t stride = 176;
    DeviceBuffer<float> scores(static_cast<size_t>(5 * stride));
    cuda::indexer_scores(paged.view(), paged.batch, 0, 5, dq.data(), dw.data(), heads, dim, scores.data(), stride, stride,
                         nullptr);
    const std::vector<float> got = download(scores, scores.size());
    std::vector<float> a, b;
    std::vector<float> key(static_cast<size_t>(dim));
    for (int64_t r = 0; r < 5; ++r) {
      const int64_t visible = (700 + r + 1) / 4;
      for (int64_t e = 0; e < visible; ++e) {
        ctx.key_codec.decode(ctx.key_bytes(chunk, e), key.data());
        float score = 0;
        for (int h = 0; h < heads; ++h) {
          score += w[static_cast<size_t>(r * heads + h)] *
                   std::max(0.0f, cpu::dot(q.data() + (r * heads + h) * dim, key.data(), static_cast<size_t>(dim)));
        }
        a.push_back(got[static_cast<size_t>(r * stride + e)]);
        b.push_back(score);
      }
    }
    const double error = relative_error(a, b);
    std::printf("indexer scores (%s keys): relative error %.3g\n", to_string(dtype), error);
    EXPECT_LE(error, 1e-5);
  }
}

TEST(CudaIndexer, TopkMatchesPartialSortIncludingTies) {
  std::mt19937 random(5);
  for (const int topk : {8, 64, 512}) {
    for (const bool ties : {false, true}) {
      const std::vector<int32_t> positions = {3, 40, 2100, 4095, 4096 * 8 - 1};
      const int64_t rows = static_cast<int64_t>(positions.size());
      const int64_t stride = 4096 * 2;
      std::vector<float> scores(static_cast<size_t>(rows * stride));
      std::uniform_int_distribution<int> small(-3, 3);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (float& s : scores) s = ties ? static_cast<float>(small(random)) : normal(random);
      for (size_t i = 0; i < scores.size(); i += 101) scores[i] = ties ? -0.0f : scores[i];
      const DeviceBuffer<float> dscores = to_device(scores);
      const DeviceBuffer<int32_t> dpos = to_device(positions);
      DeviceBuffer<int32_t> selected(static_cast<size_t>(rows * topk)), counts(static_cast<size_t>(rows));
      cuda::topk_rows(dscores.data(), stride, dpos.data(), 0, rows, 4, topk, selected.data(), counts.data(), nullptr);
      const std::vector<int32_t> got = download(selected, selected.size());
      const std::vector<int32_t> got_counts = download(counts, counts.size());
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t visible = (positions[static_cast<size_t>(r)] + 1) / 4;
        const float* row = scores.data() + r * stride;
        std::vector<int64_t> order(static_cast<size_t>(visible));
        std::iota(order.begin(), order.end(), 0);
        const int64_t k = std::min<int64_t>(topk, visible);
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t x, int64_t y) {
          return row[x] != row[y] ? row[x] > row[y] : x < y;
        });
        order.resize(static_cast<size_t>(k));
        std::sort(order.begin(), order.end());
        ASSERT_EQ(got_counts[static_cast<size_t>(r)], k);
        const std::vector<int64_t> gpu(got.begin() + r * topk, got.begin() + r * topk + k);
        EXPECT_EQ(gpu, order) << "topk " << topk << " ties " << ties << " row " << r;
      }
    }
  }
}

// ---------------------------------------------------------------- indexer: tensor-core scores, fast top-k

// A layer of `pages` compressed pages (random fp4 keys), and a batch of chunks: chunk c's rows sit
// at the given positions and its block b lives in page (b * 7 + c * 3) % pages (shuffled tables).
struct IndexerCase {
  KvLayout layout;
  DeviceBuffer<uint8_t> window, compressed;
  std::vector<uint8_t> host_pages;
  DeviceBuffer<int32_t> meta;
  cuda::BatchView batch;
  std::vector<int32_t> positions, row_chunk;
  std::vector<std::vector<int32_t>> tables;
  int64_t pages = 0;

  IndexerCase(const ModelConfig& c, int64_t page_count, uint64_t seed) : layout(make_kv_layout(c, {KvDtype::kFP8, IndexerKeyDtype::kFP4})), pages(page_count) {
    const LayerKvLayout& l = layout.layers[0];
    window.resize(l.window_page_bytes);
    compressed.resize(static_cast<size_t>(pages) * l.compressed_page_bytes);
    cuda::fill_kv_pages_random(view(), 1, pages, seed, nullptr);
    host_pages = download(compressed, compressed.size());
  }
  const LayerKvLayout& l() const { return layout.layers[0]; }
  cuda::KvLayerView view() { return cuda::make_kv_layer_view(layout, 0, window.data(), compressed.data()); }
  uint8_t* key(int chunk, int64_t e) {
    const int64_t block = e * 4 / 256;
    const int64_t page = tables[static_cast<size_t>(chunk)][static_cast<size_t>(block)];
    return host_pages.data() + page * static_cast<int64_t>(l().compressed_page_bytes) + static_cast<int64_t>(l().indexer_offset) +
           (e % l().entries_per_page) * static_cast<int64_t>(l().indexer_key_bytes);
  }
  void upload() { compressed.upload(host_pages.data(), host_pages.size()); }

  void set_batch(const std::vector<std::vector<int32_t>>& chunk_positions) {
    const int chunks = static_cast<int>(chunk_positions.size());
    std::vector<int32_t> ints(static_cast<size_t>(chunks) * sizeof(cuda::ChunkInfo) / 4);
    std::vector<cuda::ChunkInfo> infos(static_cast<size_t>(chunks));
    positions.clear();
    row_chunk.clear();
    tables.clear();
    for (int c = 0; c < chunks; ++c) {
      const auto& pos = chunk_positions[static_cast<size_t>(c)];
      const int32_t blocks = (*std::max_element(pos.begin(), pos.end())) / 256 + 1;
      std::vector<int32_t> table;
      for (int32_t b = 0; b < blocks; ++b) table.push_back(static_cast<int32_t>((b * 7 + c * 3) % pages));
      tables.push_back(table);
      cuda::ChunkInfo& info = infos[static_cast<size_t>(c)];
      info.first_row = static_cast<int32_t>(positions.size());
      info.rows = static_cast<int32_t>(pos.size());
      info.start_pos = pos.front();
      info.window_table = static_cast<int32_t>(ints.size());
      info.window_blocks = blocks;
      info.compressed_table[0] = static_cast<int32_t>(ints.size());
      info.compressed_blocks[0] = blocks;
      ints.insert(ints.end(), table.begin(), table.end());
      for (const int32_t p : pos) {
        positions.push_back(p);
        row_chunk.push_back(c);
      }
    }
    std::memcpy(ints.data(), infos.data(), infos.size() * sizeof(cuda::ChunkInfo));
    const size_t positions_at = ints.size();
    ints.insert(ints.end(), positions.begin(), positions.end());
    const size_t chunk_at = ints.size();
    ints.insert(ints.end(), row_chunk.begin(), row_chunk.end());
    meta = to_device(ints);
    batch.chunks = reinterpret_cast<const cuda::ChunkInfo*>(meta.data());
    batch.num_chunks = chunks;
    batch.tables = meta.data();
    batch.row_pos = meta.data() + positions_at;
    batch.row_chunk = meta.data() + chunk_at;
    batch.rows = static_cast<int64_t>(positions.size());
  }
};

// Host decode of a stored fp4 key (codes x 2^(E - 127)).
std::vector<float> decode_fp4_key(const uint8_t* key, int dim) {
  static const float values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  std::vector<float> out(static_cast<size_t>(dim));
  for (int i = 0; i < dim; ++i) {
    const uint32_t code = (i & 1) ? (key[i / 2] >> 4) : (key[i / 2] & 0xfu);
    const float v = values[code & 7u] * std::ldexp(1.0f, static_cast<int>(key[dim / 2 + i / 32]) - 127);
    out[static_cast<size_t>(i)] = (code & 8u) ? -v : v;
  }
  return out;
}

// The int8 tensor-core scores equal the fp32 kernel's bit for bit: exact rows and keys, and the
// ones it hands to the fp32 code (wide block-scale spans, q not fp4-simulated, zero and NaN
// blocks); one block per row (few rows) and 8 rows per block (mixed chunks, causal positions);
// up to 262144 visible entries. A sample is also checked against the CPU formula (1e-5: fp32 in
// another head order).
TEST(CudaIndexer, TensorCoreScoresBitwiseEqualFp32Kernel) {
  ModelConfig c = small_config();
  c.index_n_heads = 64;
  const int heads = 64, dim = 128;
  struct Shape {
    std::vector<std::vector<int32_t>> chunks;
    int64_t pages;
  };
  std::vector<int32_t> prefill, other;
  for (int32_t p = 5000; p < 5000 + 77; ++p) prefill.push_back(p);
  for (int32_t p = 3; p < 3 + 11; ++p) other.push_back(p);
  const std::vector<Shape> shapes = {
      {{{4099}, {700, 701, 702}}, 40},
      {{prefill, other, {4095}}, 40},
      {{{1048575, 1048574}, {999999}}, 4200},
      // Few rows, each its own sequence (the persistent few-row kernel): 1 and 8 rows near 1M.
      {{{1048575}}, 4200},
      {{{1048575}, {1048000}, {1000003}, {999999}, {524287}, {262150}, {8191}, {1048574}}, 4200},
  };
  std::mt19937 random(17);
  for (size_t si = 0; si < shapes.size(); ++si) {
    const Shape& shape = shapes[si];
    // LONGCTX_TEST_SMALL=1 (compute-sanitizer runs): without the 262144-entry shape.
    const char* small_env = std::getenv("LONGCTX_TEST_SMALL");
    if (shape.pages > 1000 && small_env != nullptr && small_env[0] == '1') continue;
    IndexerCase ic(c, shape.pages, 40 + si);
    ic.set_batch(shape.chunks);
    const int64_t rows = static_cast<int64_t>(ic.positions.size());
    int64_t max_visible = 0;
    for (const int32_t p : ic.positions) max_visible = std::max<int64_t>(max_visible, (p + 1) / 4);
    // Keys off the exact path: a block 2^6 smaller, an all-zero key, a NaN scale, a zero block.
    for (int chunk = 0; chunk < static_cast<int>(shape.chunks.size()); ++chunk) {
      const int64_t n = (shape.chunks[static_cast<size_t>(chunk)].back() + 1) / 4;
      for (int j = 0; j < 12; ++j) {
        uint8_t* key = ic.key(chunk, static_cast<int64_t>(random() % static_cast<uint32_t>(n)));
        switch (j % 4) {
          case 0: key[dim / 2 + 1] = static_cast<uint8_t>(key[dim / 2 + 1] - 6); break;
          case 1: std::memset(key, 0, dim / 2); break;
          case 2: key[dim / 2 + 3] = 0xff; break;
          case 3: std::memset(key + 16, 0x88, 16); break;
        }
      }
    }
    ic.upload();
    std::vector<float> q = random_floats(static_cast<size_t>(rows * heads * dim), 1.0f, 70 + static_cast<uint32_t>(si));
    std::vector<float> w = random_floats(static_cast<size_t>(rows * heads), 0.2f, 90 + static_cast<uint32_t>(si));
    for (int64_t r = 0; r < rows; ++r) {
      float* qr = q.data() + r * heads * dim;
      if (r % 9 == 4) continue;  // not fp4-simulated: the whole row on the fp32 code
      if (r % 9 == 5) for (int i = 0; i < 32; ++i) qr[5 * dim + 64 + i] *= 1.0f / 256.0f;  // span 2^8
      if (r % 9 == 6) std::fill(qr + 7 * dim, qr + 7 * dim + 32, 0.0f);  // a zero block: still exact
      if (r % 9 == 7) w[static_cast<size_t>(r * heads + 3)] = 0.0f;
      fp4_simulate_blocks(qr, static_cast<size_t>(heads * dim), 32);
    }
    const DeviceBuffer<float> dq = to_device(q), dw = to_device(w);
    const int64_t stride = max_visible + 3;
    std::vector<float> poison(static_cast<size_t>(rows * stride), std::nanf("7"));
    DeviceBuffer<float> old_scores = to_device(poison), new_scores = to_device(poison);
    DeviceBuffer<uint8_t> workspace(cuda::indexer_workspace_bytes(rows));
    cuda::indexer_scores(ic.view(), ic.batch, 0, rows, dq.data(), dw.data(), heads, dim, old_scores.data(), stride,
                         max_visible, nullptr);
    cuda::indexer_scores(ic.view(), ic.batch, 0, rows, dq.data(), dw.data(), heads, dim, new_scores.data(), stride,
                         max_visible, nullptr, workspace.data());
    // A slice of rows (row_begin > 0) gives the same bits.
    DeviceBuffer<float> slice_scores = to_device(poison);
    const int64_t begin = rows / 2;
    cuda::indexer_scores(ic.view(), ic.batch, begin, rows - begin, dq.data(), dw.data(), heads, dim,
                         slice_scores.data(), stride, max_visible, nullptr, workspace.data());
    const std::vector<float> a = download(old_scores, old_scores.size());
    const std::vector<float> b = download(new_scores, new_scores.size());
    const std::vector<float> s = download(slice_scores, slice_scores.size());
    int64_t compared = 0, mismatched = 0, slice_mismatched = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t visible = (ic.positions[static_cast<size_t>(r)] + 1) / 4;
      for (int64_t e = 0; e < stride; ++e) {
        const size_t at = static_cast<size_t>(r * stride + e);
        uint32_t x, y;
        std::memcpy(&x, &a[at], 4);
        std::memcpy(&y, &b[at], 4);
        ++compared;
        if (x != y) {
          if (mismatched < 5)
            std::printf("row %lld entry %lld (visible %lld): fp32 %a tensor cores %a\n", static_cast<long long>(r),
                        static_cast<long long>(e), static_cast<long long>(visible), a[at], b[at]);
          ++mismatched;
        }
        if (r >= begin) {
          uint32_t z;
          std::memcpy(&z, &s[static_cast<size_t>((r - begin) * stride + e)], 4);
          slice_mismatched += z != y;
        }
        if (e >= visible) {
          EXPECT_TRUE(std::isnan(b[at]) && x == y) << "written past the visible entries";
        }
      }
    }
    EXPECT_EQ(mismatched, 0) << "shape " << si;
    EXPECT_EQ(slice_mismatched, 0) << "shape " << si;
    // CPU formula on a sample of entries of every row.
    std::vector<double> got, want;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t visible = (ic.positions[static_cast<size_t>(r)] + 1) / 4;
      for (int j = 0; j < 40; ++j) {
        const int64_t e = j == 0 ? visible - 1 : static_cast<int64_t>(random() % static_cast<uint32_t>(visible));
        const std::vector<float> key = decode_fp4_key(ic.key(ic.row_chunk[static_cast<size_t>(r)], e), dim);
        float score = 0.0f;
        for (int h = 0; h < heads; ++h) {
          const float dot = cpu::dot(q.data() + (r * heads + h) * dim, key.data(), static_cast<size_t>(dim));
          score += w[static_cast<size_t>(r * heads + h)] * std::max(0.0f, dot);
        }
        got.push_back(b[static_cast<size_t>(r * stride + e)]);
        want.push_back(score);
      }
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      num += (got[i] - want[i]) * (got[i] - want[i]);
      den += want[i] * want[i];
    }
    const double error = std::sqrt(num / den);
    std::printf("indexer tensor-core scores, shape %zu (%lld rows, %lld entries max): %lld compared, %lld differ "
                "from fp32; vs CPU relative error %.3g\n",
                si, static_cast<long long>(rows), static_cast<long long>(max_visible), static_cast<long long>(compared),
                static_cast<long long>(mismatched), error);
    EXPECT_LE(error, 1e-5);
  }
}

// Top-k sets equal partial_sort's (ties to the lower index, ascending) on long rows, heavy ties
// (fewer distinct values than k, all equal), sorted rows (a poor sample), many rows of different
// positions, and k up to 2048.
TEST(CudaIndexer, TopkLongRowsTiesAndManyRows) {
  std::mt19937 random(23);
  struct Row {
    int32_t position;
    int kind;  // 0 normal, 1 values in {-3..3}, 2 all equal, 3 ascending, 4 descending, 5 two values
  };
  std::vector<Row> spec;
  for (int kind = 0; kind < 6; ++kind) spec.push_back({1048575, kind});
  for (int kind = 0; kind < 6; ++kind) spec.push_back({4 * 8192 + 3, kind});  // n = 8192 + 1
  for (int kind = 0; kind < 6; ++kind) spec.push_back({4 * 8192 - 1, kind});  // n = 8192
  for (int i = 0; i < 300; ++i) spec.push_back({static_cast<int32_t>(random() % 200000), static_cast<int>(random() % 6)});
  const int64_t rows = static_cast<int64_t>(spec.size());
  const int64_t stride = 262144 + 5;
  std::vector<float> scores(static_cast<size_t>(rows * stride));
  std::vector<int32_t> positions;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(-3, 3);
  for (int64_t r = 0; r < rows; ++r) {
    positions.push_back(spec[static_cast<size_t>(r)].position);
    float* row = scores.data() + r * stride;
    for (int64_t e = 0; e < stride; ++e) {
      switch (spec[static_cast<size_t>(r)].kind) {
        case 0: row[e] = normal(random); break;
        case 1: row[e] = static_cast<float>(small(random)); break;
        case 2: row[e] = 0.5f; break;
        case 3: row[e] = static_cast<float>(e) * 1e-3f; break;
        case 4: row[e] = -static_cast<float>(e); break;
        case 5: row[e] = (e % 1000 == 3) ? 1.0f : ((e % 7 == 0) ? -0.0f : 0.0f); break;
      }
    }
  }
  const DeviceBuffer<float> dscores = to_device(scores);
  const DeviceBuffer<int32_t> dpos = to_device(positions);
  for (const int topk : {512, 2048}) {
    DeviceBuffer<int32_t> selected(static_cast<size_t>(rows * topk)), counts(static_cast<size_t>(rows));
    cuda::topk_rows(dscores.data(), stride, dpos.data(), 0, rows, 4, topk, selected.data(), counts.data(), nullptr);
    const std::vector<int32_t> got = download(selected, selected.size());
    const std::vector<int32_t> got_counts = download(counts, counts.size());
    int64_t wrong = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t visible = (positions[static_cast<size_t>(r)] + 1) / 4;
      const float* row = scores.data() + r * stride;
      std::vector<int32_t> order(static_cast<size_t>(visible));
      std::iota(order.begin(), order.end(), 0);
      const int64_t k = std::min<int64_t>(topk, visible);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t x, int32_t y) {
        return row[x] != row[y] ? row[x] > row[y] : x < y;
      });
      order.resize(static_cast<size_t>(k));
      std::sort(order.begin(), order.end());
      ASSERT_EQ(got_counts[static_cast<size_t>(r)], k);
      const std::vector<int32_t> gpu(got.begin() + r * topk, got.begin() + r * topk + k);
      if (gpu != order) {
        ++wrong;
        ADD_FAILURE() << "topk " << topk << " row " << r << " kind " << spec[static_cast<size_t>(r)].kind << " visible "
                      << visible;
      }
    }
    std::printf("top-%d: %lld rows (up to 262144 entries), %lld wrong\n", topk, static_cast<long long>(rows),
                static_cast<long long>(wrong));
  }
}

// Few-row steps split each row over many blocks (topk_rows with a workspace): the same indices
// in the same order as without a workspace and as partial_sort (ties to the lower index,
// ascending), 1..8 rows of up to 262144 entries: normal scores, heavy ties ({-3..3}: more
// candidates than fit, the exact fallback), all equal, ascending/descending, two values with
// -0/+0, the top entries clustered in one 4096-entry segment, coarse ties at the threshold
// (round(20 x) / 20), rows of <= k and <= 8192 entries; k = 8, 512, 2048.
TEST(CudaIndexer, TopkSplitRowsMatchOneBlockKernel) {
  std::mt19937 random(31);
  const int64_t stride = 262144 + 5;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(-3, 3);
  for (const int64_t rows : {1, 2, 3, 8}) {
    std::vector<float> scores(static_cast<size_t>(rows * stride));
    std::vector<int32_t> positions;
    std::vector<int> kinds;
    for (int64_t r = 0; r < rows; ++r) {
      const int kind = static_cast<int>((r * 3 + rows) % 9);
      const int32_t position = r == 0 ? 1048575
                               : r == 5 ? 4 * 5000 + 2
                               : r == 6 ? 40
                                        : static_cast<int32_t>(1048575 - random() % 600000);
      positions.push_back(position);
      kinds.push_back(kind);
      float* row = scores.data() + r * stride;
      for (int64_t e = 0; e < stride; ++e) {
        switch (kind) {
          case 0: row[e] = normal(random); break;
          case 1: row[e] = static_cast<float>(small(random)); break;
          case 2: row[e] = 0.5f; break;
          case 3: row[e] = static_cast<float>(e) * 1e-3f; break;
          case 4: row[e] = -static_cast<float>(e); break;
          case 5: row[e] = (e % 1000 == 3) ? 1.0f : ((e % 7 == 0) ? -0.0f : 0.0f); break;
          case 6: row[e] = normal(random) + ((e >= 100000 && e < 104096) ? 4.0f : 0.0f); break;
          case 7: row[e] = std::round(normal(random) * 20.0f) / 20.0f; break;
          case 8: row[e] = normal(random) * ((e % 3 == 0) ? 1e-30f : 1e30f); break;
        }
      }
    }
    const DeviceBuffer<float> dscores = to_device(scores);
    const DeviceBuffer<int32_t> dpos = to_device(positions);
    DeviceBuffer<uint8_t> workspace(cuda::topk_workspace_bytes(rows, stride));
    for (const int topk : {8, 512, 2048}) {
      const std::vector<int32_t> poison(static_cast<size_t>(rows * topk), -7);
      DeviceBuffer<int32_t> one = to_device(poison), split = to_device(poison);
      DeviceBuffer<int32_t> one_counts(static_cast<size_t>(rows)), split_counts(static_cast<size_t>(rows));
      cuda::topk_rows(dscores.data(), stride, dpos.data(), 0, rows, 4, topk, one.data(), one_counts.data(), nullptr);
      cuda::topk_rows(dscores.data(), stride, dpos.data(), 0, rows, 4, topk, split.data(), split_counts.data(), nullptr,
                      workspace.data());
      const std::vector<int32_t> a = download(one, one.size()), b = download(split, split.size());
      const std::vector<int32_t> ca = download(one_counts, one_counts.size());
      const std::vector<int32_t> cb = download(split_counts, split_counts.size());
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t visible = (positions[static_cast<size_t>(r)] + 1) / 4;
        const float* row = scores.data() + r * stride;
        std::vector<int32_t> order(static_cast<size_t>(visible));
        std::iota(order.begin(), order.end(), 0);
        const int64_t k = std::min<int64_t>(topk, visible);
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t x, int32_t y) {
          const float fx = row[x] == 0.0f ? 0.0f : row[x], fy = row[y] == 0.0f ? 0.0f : row[y];
          return fx != fy ? fx > fy : x < y;
        });
        order.resize(static_cast<size_t>(k));
        std::sort(order.begin(), order.end());
        ASSERT_EQ(cb[static_cast<size_t>(r)], k);
        ASSERT_EQ(ca[static_cast<size_t>(r)], k);
        const std::vector<int32_t> got(b.begin() + r * topk, b.begin() + r * topk + k);
        const std::vector<int32_t> old(a.begin() + r * topk, a.begin() + r * topk + k);
        EXPECT_EQ(got, order) << "rows " << rows << " row " << r << " kind " << kinds[static_cast<size_t>(r)]
                              << " k " << topk << " visible " << visible;
        EXPECT_EQ(got, old) << "rows " << rows << " row " << r << " kind " << kinds[static_cast<size_t>(r)];
        for (int64_t j = k; j < topk; ++j) EXPECT_EQ(b[static_cast<size_t>(r * topk + j)], -7) << "written past k";
      }
    }
  }
}

// ---------------------------------------------------------------- attention

TEST(CudaAttention, SparseAttentionWithSinkMatchesCpu) {
  const ModelConfig c = small_config();
  for (const KvDtype dtype : {KvDtype::kF32, KvDtype::kBF16, KvDtype::kFP8}) {
    PagedLayer paged(c, {dtype, IndexerKeyDtype::kF32}, 3);
    const RopeTable rope = RopeTable::for_layer(c, 4);
    AttentionWeights weights;
    const cpu::LayerContext ctx(c, weights, paged.l(), rope, paged.storage, paged.layout.options);
    const int d = static_cast<int>(c.head_dim);
    const int heads = static_cast<int>(c.num_attention_heads);
    const int64_t start = 250, rows = 12;  // crosses the block boundary at 256
    const cpu::ChunkView chunk = paged.chunk(start, rows);
    auto stored = [&](uint32_t seed) {
      std::vector<float> v = random_floats(static_cast<size_t>(d), 1.0f, seed);
      fp8_simulate_blocks(v.data(), static_cast<size_t>(d - 64), 64);
      ctx.kv_codec.round_trip(v.data());
      return v;
    };
    for (int64_t p = start - c.sliding_window; p < start; ++p) {
      const std::vector<float> v = stored(1000 + static_cast<uint32_t>(p));
      const int64_t slot = (p % 256) % paged.l().window_entries;
      ctx.kv_codec.encode(v.data(), ctx.window_page(chunk, p) + slot * paged.l().kv_entry_bytes);
    }
    const int64_t entries = (start + rows) / 4;
    for (int64_t e = 0; e < entries; ++e) {
      const std::vector<float> v = stored(5000 + static_cast<uint32_t>(e));
      ctx.kv_codec.encode(v.data(), ctx.entry_bytes(chunk, e));
    }
    std::vector<float> fresh;
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<float> v = stored(9000 + static_cast<uint32_t>(r));
      fresh.insert(fresh.end(), v.begin(), v.end());
    }
    paged.upload_pages();
    paged.set_batch(static_cast<int32_t>(start), static_cast<int32_t>(rows));
    const std::vector<float> q = random_floats(static_cast<size_t>(rows * heads * d), 0.3f, 71);
    const std::vector<float> sinks = random_floats(static_cast<size_t>(heads), 1.0f, 72);
    // Selections: a random ascending subset of the visible entries, at most topk.
    const int topk = static_cast<int>(c.index_topk);
    std::vector<int32_t> selected(static_cast<size_t>(rows * topk)), counts(static_cast<size_t>(rows));
    std::mt19937 random(73);
    std::vector<std::vector<int64_t>> lists(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t visible = (start + r + 1) / 4;
      std::vector<int64_t> all(static_cast<size_t>(visible));
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), random);
      all.resize(static_cast<size_t>(std::min<int64_t>(topk, visible)) - static_cast<size_t>(r % 2));
      std::sort(all.begin(), all.end());
      lists[static_cast<size_t>(r)] = all;
      counts[static_cast<size_t>(r)] = static_cast<int32_t>(all.size());
      for (size_t i = 0; i < all.size(); ++i) selected[static_cast<size_t>(r * topk) + i] = static_cast<int32_t>(all[i]);
    }
    const DeviceBuffer<float> dq = to_device(q), dfresh = to_device(fresh), dsinks = to_device(sinks);
    const DeviceBuffer<float> freq = to_device(rope.inverse_frequencies());
    const DeviceBuffer<int32_t> dselected = to_device(selected), dcounts = to_device(counts);
    for (const bool all_visible : {false, true}) {
      DeviceBuffer<float> dout(static_cast<size_t>(rows * heads * d));
      // Room for 5 rows at a time: the kernel must slice the batch.
      const int64_t max_keys = c.sliding_window + entries;
      DeviceBuffer<float> workspace(cuda::attention_workspace_floats(5, heads, d, max_keys));
      cuda::sparse_attention(paged.view(), paged.batch, dq.data(), dfresh.data(), dsinks.data(),
                             all_visible ? nullptr : dselected.data(), dcounts.data(), topk, heads,
                             static_cast<int>(c.sliding_window), max_keys, freq.data(), dout.data(), workspace.data(),
                             workspace.size(), nullptr);
      std::vector<float> ref(dout.size());
      std::vector<float> keys;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t pos = start + r;
        std::vector<int64_t> list = lists[static_cast<size_t>(r)];
        if (all_visible) {
          list.resize(static_cast<size_t>((pos + 1) / 4));
          std::iota(list.begin(), list.end(), 0);
        }
        const int64_t first = std::max<int64_t>(0, pos - c.sliding_window + 1);
        keys.clear();
        for (int64_t p = first; p <= pos; ++p) {
          std::vector<float> k(static_cast<size_t>(d));
          if (p >= start) {
            std::copy_n(fresh.data() + (p - start) * d, d, k.data());
          } else {
            ctx.kv_codec.decode(ctx.window_page(chunk, p) + ((p % 256) % paged.l().window_entries) * paged.l().kv_entry_bytes,
                                k.data());
          }
          keys.insert(keys.end(), k.begin(), k.end());
        }
        for (const int64_t e : list) {
          std::vector<float> k(static_cast<size_t>(d));
          ctx.kv_codec.decode(ctx.entry_bytes(chunk, e), k.data());
          keys.insert(keys.end(), k.begin(), k.end());
        }
        float* o = ref.data() + r * heads * d;
        cpu::attend(q.data() + r * heads * d, keys.data(), static_cast<int64_t>(keys.size()) / d, sinks.data(), heads, d, o);
        for (int h = 0; h < heads; ++h) rope.rotate(o + h * d + d - 64, pos, true);
      }
      const double error = relative_error(download(dout, dout.size()), ref);
      std::printf("sparse attention (%s, %s): relative error %.3g\n", to_string(dtype),
                  all_visible ? "all visible" : "selected", error);
      EXPECT_LE(error, 2e-5);
    }
    // Window writes: the ring holds the encoded fresh rows, the last position of a slot winning.
    cuda::write_window(paged.view(), paged.batch, dfresh.data(), nullptr);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t p = start + r;
      ctx.kv_codec.encode(fresh.data() + r * d, ctx.window_page(chunk, p) + ((p % 256) % paged.l().window_entries) * paged.l().kv_entry_bytes);
    }
    const std::vector<uint8_t> device_window = paged.device_window();
    const size_t wbytes = device_window.size();
    EXPECT_EQ(0, std::memcmp(device_window.data(), paged.storage.window_page(0, 0), wbytes)) << to_string(dtype);
  }
}

// ---------------------------------------------------------------- compressor

TEST(CudaCompressor, MatchesCpuAcrossChunksAndBlocks) {
  const ModelConfig c = small_config();
  for (const KvCacheOptions options : {KvCacheOptions{KvDtype::kF32, IndexerKeyDtype::kF32},
                                       KvCacheOptions{KvDtype::kFP8, IndexerKeyDtype::kFP4}}) {
    PagedLayer paged(c, options, 3);
    const RopeTable rope = RopeTable::for_layer(c, 4);
    AttentionWeights weights;
    CompressorWeights main;
    main.ratio = 4;
    main.overlap = true;
    main.head_dim = c.head_dim;
    main.ape = random_floats(static_cast<size_t>(4 * main.width()), 0.5f, 81);
    main.norm = random_floats(static_cast<size_t>(c.head_dim), 1.0f, 82);
    weights.compressor = main;
    IndexerWeights indexer;
    indexer.compressor = main;
    indexer.compressor.head_dim = c.index_head_dim;
    indexer.compressor.ape = random_floats(static_cast<size_t>(4 * indexer.compressor.width()), 0.5f, 83);
    indexer.compressor.norm = random_floats(static_cast<size_t>(c.index_head_dim), 1.0f, 84);
    weights.indexer = indexer;
    const cpu::LayerContext ctx(c, weights, paged.l(), rope, paged.storage, paged.layout.options);
    const int64_t total = 700;
    const int64_t mw = main.width(), iw = indexer.compressor.width();
    const std::vector<float> mkv = random_floats(static_cast<size_t>(total * mw), 1.0f, 85);
    const std::vector<float> msc = random_floats(static_cast<size_t>(total * mw), 1.0f, 86);
    const std::vector<float> ikv = random_floats(static_cast<size_t>(total * iw), 1.0f, 87);
    const std::vector<float> isc = random_floats(static_cast<size_t>(total * iw), 1.0f, 88);
    paged.upload_pages();  // zero pages on both sides
    const DeviceBuffer<float> ape_m = to_device(main.ape), norm_m = to_device(main.norm);
    const DeviceBuffer<float> ape_i = to_device(indexer.compressor.ape), norm_i = to_device(indexer.compressor.norm);
    const DeviceBuffer<float> freq = to_device(rope.inverse_frequencies());
    const cuda::CompressorView vm{ape_m.data(), norm_m.data(), 4, 1, static_cast<int>(c.head_dim)};
    const cuda::CompressorView vi{ape_i.data(), norm_i.data(), 4, 1, static_cast<int>(c.index_head_dim)};
    // Chunks that end mid-entry, cross the 256 and 512 blocks, and one single-token step.
    int64_t position = 0;
    for (const int64_t size : {int64_t{137}, int64_t{1}, int64_t{300}, int64_t{262}}) {
      const cpu::ChunkView chunk = paged.chunk(position, size);
      cpu::run_compressors(ctx, {0, size, position, &paged.tables}, mkv.data() + position * mw, msc.data() + position * mw,
                           ikv.data() + position * iw, isc.data() + position * iw);
      (void)chunk;
      paged.set_batch(static_cast<int32_t>(position), static_cast<int32_t>(size));
      const DeviceBuffer<float> dmkv = to_device(std::vector<float>(mkv.begin() + position * mw, mkv.begin() + (position + size) * mw));
      const DeviceBuffer<float> dmsc = to_device(std::vector<float>(msc.begin() + position * mw, msc.begin() + (position + size) * mw));
      const DeviceBuffer<float> dikv = to_device(std::vector<float>(ikv.begin() + position * iw, ikv.begin() + (position + size) * iw));
      const DeviceBuffer<float> disc = to_device(std::vector<float>(isc.begin() + position * iw, isc.begin() + (position + size) * iw));
      cuda::run_compressors(paged.view(), paged.batch, vm, dmkv.data(), dmsc.data(), &vi, dikv.data(), disc.data(),
                            freq.data(), 1e-6f, nullptr);
      position += size;
    }
    // Entries: decode both sides.
    const std::vector<uint8_t> device_compressed = paged.device_compressed();
    const std::vector<uint8_t> device_window = paged.device_window();
    const cpu::ChunkView chunk = paged.chunk(0, total);
    std::vector<float> got_main, ref_main, got_keys, ref_keys;
    std::vector<float> v(static_cast<size_t>(c.head_dim));
    const uint8_t* host_base = paged.storage.compressed_page(0, 0);
    for (int64_t e = 0; e < total / 4; ++e) {
      const uint8_t* host_entry = ctx.entry_bytes(chunk, e);
      ctx.kv_codec.decode(host_entry, v.data());
      ref_main.insert(ref_main.end(), v.begin(), v.end());
      ctx.kv_codec.decode(device_compressed.data() + (host_entry - host_base), v.data());
      got_main.insert(got_main.end(), v.begin(), v.end());
      const uint8_t* host_key = ctx.key_bytes(chunk, e);
      ctx.key_codec.decode(host_key, v.data());
      ref_keys.insert(ref_keys.end(), v.begin(), v.begin() + c.index_head_dim);
      ctx.key_codec.decode(device_compressed.data() + (host_key - host_base), v.data());
      got_keys.insert(got_keys.end(), v.begin(), v.begin() + c.index_head_dim);
    }
    // State after the last position, in its window page.
    const float* host_state = ctx.state(chunk, total - 1);
    const size_t state_at = static_cast<size_t>(reinterpret_cast<const uint8_t*>(host_state) - paged.storage.window_page(0, 0));
    std::vector<float> got_state(paged.l().state_floats), ref_state(host_state, host_state + paged.l().state_floats);
    std::memcpy(got_state.data(), device_window.data() + state_at, got_state.size() * sizeof(float));
    for (size_t i = 0; i < got_state.size(); ++i) {  // the running maxima may be -inf
      if (std::isinf(ref_state[i]) && got_state[i] == ref_state[i]) got_state[i] = ref_state[i] = 0.0f;
    }
    const double main_close = fraction_close(got_main, ref_main, 1e-5);
    const double key_close = fraction_close(got_keys, ref_keys, 1e-5);
    const double state_error = relative_error(got_state, ref_state);
    std::printf("compressor (%s/%s): entries %.4f within 1e-5 (max %.3g), keys %.4f within 1e-5 (max %.3g), state %.3g\n",
                to_string(options.kv_dtype), to_string(options.indexer_dtype), main_close,
                relative_error(got_main, ref_main), key_close, relative_error(got_keys, ref_keys), state_error);
    EXPECT_GE(main_close, 0.99);
    EXPECT_GE(key_close, 0.98);
    EXPECT_LE(relative_error(got_main, ref_main), 0.07);
    EXPECT_LE(state_error, 1e-5);
  }
}

// The parallel prefill path (independent entries pooled by their own blocks, the streaming walk
// only for a chunk's head and tail) against the sequential walk (`streaming_only`), bitwise on
// every window and compressed page byte: long chunks starting at 0, at odd positions and at block
// boundaries, several chunks of different sizes in one batch, ratio 4 (overlapping) and 128, with
// and without the indexer compressor. Pages start as the same random bytes on both sides, so an
// entry the parallel path fails to write shows up.
TEST(CudaCompressor, ParallelPrefillMatchesStreamingWalkBitwise) {
  for (const int ratio : {4, 128}) {
    for (const bool with_index : {true, false}) {
      ModelConfig c = small_config();
      c.compress_ratios = {ratio};
      const KvLayout layout = make_kv_layout(c, {KvDtype::kFP8, IndexerKeyDtype::kFP4});
      const LayerKvLayout& l = layout.layers[0];
      const bool index = with_index && l.has_indexer;
      if (with_index && !index) continue;  // ratio 128 layers have no indexer
      // Chunk sizes of each sequence per step (0: the sequence sits the step out).
      const std::vector<std::vector<int32_t>> plan = {
          {8192, 8192, 5},  // starts at 0, then at a block boundary
          {37, 8192, 130},  // an odd start (mid-entry for both ratios)
          {256, 8193, 1},   // a block boundary, then an odd start inside an entry
          {3, 0, 8190},     // a start inside the first ratio-4 entry
          {1, 40, 0},       // decode-like rows next to long chunks
      };
      const int sequences = static_cast<int>(plan.size());
      int64_t most = 0;
      for (const auto& sizes : plan) most = std::max<int64_t>(most, std::accumulate(sizes.begin(), sizes.end(), int64_t{0}));
      const int64_t blocks = (most + kKvBlockSize - 1) / kKvBlockSize;
      const int64_t window_pages = sequences * blocks, compressed_pages = sequences * blocks;
      const size_t wbytes = static_cast<size_t>(window_pages) * l.window_page_bytes;
      const size_t cbytes = static_cast<size_t>(compressed_pages) * l.compressed_page_bytes;
      std::vector<uint8_t> initial_window(wbytes), initial_compressed(cbytes);
      std::mt19937 bytes_rng(7);
      for (uint8_t& b : initial_window) b = static_cast<uint8_t>(bytes_rng());
      for (uint8_t& b : initial_compressed) b = static_cast<uint8_t>(bytes_rng());
      DeviceBuffer<uint8_t> window[2] = {to_device(initial_window), to_device(initial_window)};
      DeviceBuffer<uint8_t> compressed[2] = {to_device(initial_compressed), to_device(initial_compressed)};

      const int channels = static_cast<int>(c.head_dim), index_channels = static_cast<int>(c.index_head_dim);
      const int main_width = (ratio == 4 ? 2 : 1) * channels, index_width = 2 * index_channels;
      const DeviceBuffer<float> ape_m = to_device(random_floats(static_cast<size_t>(ratio * main_width), 0.5f, 91));
      const DeviceBuffer<float> ape_i = to_device(random_floats(static_cast<size_t>(ratio * index_width), 0.5f, 92));
      const DeviceBuffer<float> norm_m = to_device(random_floats(static_cast<size_t>(channels), 1.0f, 93));
      const DeviceBuffer<float> norm_i = to_device(random_floats(static_cast<size_t>(index_channels), 1.0f, 94));
      const DeviceBuffer<float> freq = to_device(RopeTable::for_layer(c, ratio).inverse_frequencies());
      const cuda::CompressorView vm{ape_m.data(), norm_m.data(), ratio, ratio == 4 ? 1 : 0, channels};
      const cuda::CompressorView vi{ape_i.data(), norm_i.data(), ratio, 1, index_channels};

      std::vector<int32_t> position(static_cast<size_t>(sequences), 0);
      for (size_t step = 0; step < plan[0].size(); ++step) {
        // Sequence i: window block b -> page i * blocks + (blocks - 1 - b) (out of order),
        // compressed block b -> page i * blocks + b.
        std::vector<cuda::ChunkInfo> infos;
        std::vector<int32_t> tables;
        int32_t rows = 0;
        for (int i = 0; i < sequences; ++i) {
          const int32_t size = plan[static_cast<size_t>(i)][step];
          if (size == 0) continue;
          cuda::ChunkInfo info;
          info.first_row = rows;
          info.rows = size;
          info.start_pos = position[static_cast<size_t>(i)];
          info.window_table = static_cast<int32_t>(tables.size());
          info.window_blocks = static_cast<int32_t>(blocks);
          for (int64_t b = 0; b < blocks; ++b) tables.push_back(static_cast<int32_t>(i * blocks + blocks - 1 - b));
          info.compressed_table[0] = static_cast<int32_t>(tables.size());
          info.compressed_blocks[0] = static_cast<int32_t>(blocks);
          for (int64_t b = 0; b < blocks; ++b) tables.push_back(static_cast<int32_t>(i * blocks + b));
          infos.push_back(info);
          rows += size;
          position[static_cast<size_t>(i)] += size;
        }
        const size_t header = infos.size() * sizeof(cuda::ChunkInfo) / sizeof(int32_t);
        std::vector<int32_t> meta(header);
        std::memcpy(meta.data(), infos.data(), infos.size() * sizeof(cuda::ChunkInfo));
        for (cuda::ChunkInfo& info : infos) {  // tables follow the chunk array
          info.window_table += static_cast<int32_t>(header);
          info.compressed_table[0] += static_cast<int32_t>(header);
        }
        std::memcpy(meta.data(), infos.data(), infos.size() * sizeof(cuda::ChunkInfo));
        meta.insert(meta.end(), tables.begin(), tables.end());
        const DeviceBuffer<int32_t> device_meta = to_device(meta);
        const cuda::BatchView batch{reinterpret_cast<const cuda::ChunkInfo*>(device_meta.data()),
                                    static_cast<int>(infos.size()), device_meta.data(), nullptr, nullptr, rows};
        DeviceBuffer<float> mkv(static_cast<size_t>(rows) * main_width), msc(static_cast<size_t>(rows) * main_width);
        DeviceBuffer<float> ikv(static_cast<size_t>(rows) * index_width), isc(static_cast<size_t>(rows) * index_width);
        const uint64_t seed = 1000 * static_cast<uint64_t>(ratio) + 10 * step;
        cuda::fill_floats_random(mkv.data(), static_cast<int64_t>(mkv.size()), 0.0f, 1.0f, seed + 1, nullptr);
        cuda::fill_floats_random(msc.data(), static_cast<int64_t>(msc.size()), 0.0f, 1.0f, seed + 2, nullptr);
        cuda::fill_floats_random(ikv.data(), static_cast<int64_t>(ikv.size()), 0.0f, 1.0f, seed + 3, nullptr);
        cuda::fill_floats_random(isc.data(), static_cast<int64_t>(isc.size()), 0.0f, 1.0f, seed + 4, nullptr);
        for (int side = 0; side < 2; ++side) {
          const cuda::KvLayerView kv = cuda::make_kv_layer_view(layout, 0, window[side].data(), compressed[side].data());
          cuda::run_compressors(kv, batch, vm, mkv.data(), msc.data(), index ? &vi : nullptr, ikv.data(), isc.data(),
                                freq.data(), 1e-6f, nullptr, nullptr, 0, 0, /*streaming_only=*/side == 1);
        }
        const std::vector<uint8_t> w0 = download(window[0], wbytes), w1 = download(window[1], wbytes);
        const std::vector<uint8_t> c0 = download(compressed[0], cbytes), c1 = download(compressed[1], cbytes);
        size_t window_diff = 0, compressed_diff = 0;
        for (size_t i = 0; i < wbytes; ++i) window_diff += w0[i] != w1[i];
        for (size_t i = 0; i < cbytes; ++i) compressed_diff += c0[i] != c1[i];
        const size_t written = cbytes - static_cast<size_t>(std::inner_product(
                                            c1.begin(), c1.end(), initial_compressed.begin(), size_t{0}, std::plus<>(),
                                            [](uint8_t a, uint8_t b) { return static_cast<size_t>(a == b); }));
        std::printf("compressor c%d%s step %zu (%zu chunks, %d rows): window bytes differing %zu, compressed %zu "
                    "(of %zu changed by the walk)\n",
                    ratio, index ? " + indexer" : "", step, infos.size(), rows, window_diff, compressed_diff, written);
        EXPECT_EQ(window_diff, 0u) << "ratio " << ratio << " step " << step;
        EXPECT_EQ(compressed_diff, 0u) << "ratio " << ratio << " step " << step;
        EXPECT_GT(written, 0u);
      }
    }
  }
}

// ---------------------------------------------------------------- MoE

struct HostMoe {
  std::vector<HostLinear> storage;
  MoeWeights w;
};

TEST(CudaMoe, RoutingAndSublayerMatchCpu) {
  ModelConfig c = small_config();
  c.hidden_size = 256;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 3;
  c.moe_intermediate_size = 256;
  c.vocab_size = 64;
  c.scoring_func = ScoringFunc::kSqrtSoftplus;
  c.routed_scaling_factor = 1.5;
  c.swiglu_limit = 10.0;
  const int64_t rows = 37, hidden = c.hidden_size, inter = c.moe_intermediate_size, k = c.num_experts_per_tok;
  const int experts = static_cast<int>(c.n_routed_experts);
  Workspace workspace;
  for (const bool hash : {false, true}) {
    std::vector<HostLinear> keep;
    keep.reserve(64);
    MoeWeights w;
    keep.push_back(random_linear(WeightFormat::kBF16, experts, hidden, 901));
    w.gate = keep.back().w;
    std::vector<int32_t> tokens(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) tokens[static_cast<size_t>(r)] = static_cast<int32_t>((r * 7) % c.vocab_size);
    if (hash) {
      std::mt19937 random(3);
      for (int64_t i = 0; i < c.vocab_size * k; ++i) w.tid2eid.push_back(static_cast<int32_t>(random() % experts));
    } else {
      w.gate_bias = random_floats(static_cast<size_t>(experts), 0.1f, 902);
    }
    std::vector<uint8_t> stacked[3][2];
    for (int e = 0; e < experts; ++e) {
      ExpertWeights ew;
      keep.push_back(random_linear(WeightFormat::kFP4, inter, hidden, 1000 + e * 3, true));
      ew.w1 = keep.back().w;
      keep.push_back(random_linear(WeightFormat::kFP4, hidden, inter, 1001 + e * 3, true));
      ew.w2 = keep.back().w;
      keep.push_back(random_linear(WeightFormat::kFP4, inter, hidden, 1002 + e * 3, true));
      ew.w3 = keep.back().w;
      for (int m = 0; m < 3; ++m) {
        const HostLinear& h = keep[keep.size() - 3 + static_cast<size_t>(m)];
        stacked[m][0].insert(stacked[m][0].end(), h.weight.begin(), h.weight.end());
        stacked[m][1].insert(stacked[m][1].end(), h.scale.begin(), h.scale.end());
      }
      w.experts.push_back(ew);
    }
    keep.push_back(random_linear(WeightFormat::kFP8, inter, hidden, 2001, true));
    keep.push_back(random_linear(WeightFormat::kFP8, hidden, inter, 2002, true));
    keep.push_back(random_linear(WeightFormat::kFP8, inter, hidden, 2003, true));
    w.shared = ExpertWeights{keep[keep.size() - 3].w, keep[keep.size() - 2].w, keep[keep.size() - 1].w};
    const std::vector<float> x = random_floats(static_cast<size_t>(rows * hidden), 1.0f, 903);

    // CPU.
    const cpu::Routing routing = cpu::route(w, c, x.data(), tokens);
    std::vector<float> ref(static_cast<size_t>(rows * hidden));
    cpu::moe_sublayer(w, c, x.data(), tokens, ref.data());

    // GPU: the backend's sequence of kernels.
    const DeviceLinear gate = upload(keep[0]);
    const DeviceBuffer<float> dx = to_device(x);
    const DeviceBuffer<int32_t> dtokens = to_device(tokens);
    DeviceBuffer<float> logits(static_cast<size_t>(rows * experts));
    cuda::linear(gate.view, dx.data(), hidden, rows, logits.data(), experts, 0, workspace.view(), nullptr);
    const DeviceBuffer<float> bias = hash ? DeviceBuffer<float>() : to_device(w.gate_bias);
    const DeviceBuffer<int32_t> tid2eid = hash ? to_device(w.tid2eid) : DeviceBuffer<int32_t>();
    DeviceBuffer<int32_t> chosen(static_cast<size_t>(rows * k));
    DeviceBuffer<float> route_weights(static_cast<size_t>(rows * k));
    cuda::moe_route(logits.data(), hash ? nullptr : bias.data(), hash ? tid2eid.data() : nullptr, dtokens.data(), rows,
                    experts, static_cast<int>(k), cuda::kScoreSqrtSoftplus, true, 1.5f, chosen.data(), route_weights.data(),
                    nullptr);
    EXPECT_EQ(download(chosen, chosen.size()), routing.experts) << "hash " << hash;
    const double weight_error = relative_error(download(route_weights, route_weights.size()), routing.weights);
    EXPECT_LE(weight_error, 1e-5);
    DeviceBuffer<int32_t> counts(static_cast<size_t>(experts)), offsets(static_cast<size_t>(experts)),
        fill(static_cast<size_t>(experts)), slot_rows(static_cast<size_t>(rows * k)), entry_slot(static_cast<size_t>(rows * k)),
        active(static_cast<size_t>(experts));
    DeviceBuffer<float> slot_weights(static_cast<size_t>(rows * k));
    cuda::moe_permute(chosen.data(), route_weights.data(), rows, static_cast<int>(k), experts, counts.data(),
                      offsets.data(), fill.data(), slot_rows.data(), slot_weights.data(), entry_slot.data(), active.data(),
                      nullptr);
    DeviceBuffer<float> xq(x.size());
    cuda::fp8_simulate_rows(dx.data(), rows, hidden, hidden, xq.data(), hidden, nullptr);
    DeviceBuffer<uint8_t> ew[3], es[3];
    cuda::LinearView ev[3];
    for (int m = 0; m < 3; ++m) {
      ew[m] = to_device(stacked[m][0]);
      es[m] = to_device(stacked[m][1]);
      const LinearWeight& first = m == 0 ? w.experts[0].w1 : (m == 1 ? w.experts[0].w2 : w.experts[0].w3);
      ev[m] = {ew[m].data(), es[m].data(), cuda::kWeightFP4, first.out, first.in,
               static_cast<int64_t>(stacked[m][0].size() / experts), static_cast<int64_t>(stacked[m][1].size() / experts)};
    }
    const int64_t slots = rows * k;
    DeviceBuffer<float> g(static_cast<size_t>(slots * inter)), u(g.size()), h(g.size()), so(static_cast<size_t>(slots * hidden));
    cuda::grouped_linear(ev[0], experts, offsets.data(), counts.data(), slots, xq.data(), hidden, slot_rows.data(), g.data(),
                         inter, workspace.view(), nullptr, active.data());
    cuda::grouped_linear(ev[2], experts, offsets.data(), counts.data(), slots, xq.data(), hidden, slot_rows.data(), u.data(),
                         inter, workspace.view(), nullptr, active.data());
    cuda::swiglu(g.data(), u.data(), slots, inter, slot_weights.data(), 10.0f, h.data(), nullptr);
    cuda::fp8_simulate_rows(h.data(), slots, inter, inter, h.data(), inter, nullptr);
    cuda::grouped_linear(ev[1], experts, offsets.data(), counts.data(), slots, h.data(), inter, nullptr, so.data(), hidden,
                         workspace.view(), nullptr, active.data());
    const DeviceLinear s1 = upload(keep[keep.size() - 3]), s2 = upload(keep[keep.size() - 2]), s3 = upload(keep[keep.size() - 1]);
    DeviceBuffer<float> sg(static_cast<size_t>(rows * inter)), su(sg.size()), sh(sg.size()), sout(x.size()), out(x.size());
    cuda::linear(s1.view, xq.data(), hidden, rows, sg.data(), inter, 0, workspace.view(), nullptr);
    cuda::linear(s3.view, xq.data(), hidden, rows, su.data(), inter, 0, workspace.view(), nullptr);
    cuda::swiglu(sg.data(), su.data(), rows, inter, nullptr, 10.0f, sh.data(), nullptr);
    cuda::fp8_simulate_rows(sh.data(), rows, inter, inter, sh.data(), inter, nullptr);
    cuda::linear(s2.view, sh.data(), inter, rows, sout.data(), hidden, 0, workspace.view(), nullptr);
    cuda::moe_combine(so.data(), entry_slot.data(), chosen.data(), rows, static_cast<int>(k), hidden, sout.data(), out.data(),
                      nullptr);
    const std::vector<float> got = download(out, out.size());
    const double close = fraction_close(got, ref, 1e-5);
    const double error = relative_error(got, ref);
    std::printf("MoE sublayer (%s routing, fp4 experts): weights %.3g, %.4f within 1e-5, max relative error %.3g\n",
                hash ? "hash" : "scored", weight_error, close, error);
    EXPECT_GE(close, 0.99);
    EXPECT_LE(error, 5e-3);  // rare fp8 flips of the requantized SwiGLU output
  }
}

// ---------------------------------------------------------------- synthetic (benchmark data)

// Weights made on the device are in the stored format a released checkpoint uses: finite codes,
// N(0, stddev) values, and each block's scale the one its amax gives: block_quant's power-of-two
// ceiling puts amax / scale in (224, 448] for fp8 and (3, 6] for fp4, so the largest decoded
// |code| of a block is in [224, 448] (values just above 224 round to 224) or in {3, 4, 6}.
TEST(CudaSynthetic, LinearWeightsAreValidStoredFormats) {
  const int64_t out = 384, in = 512;
  const float stddev = 0.05f;
  for (const WeightFormat format : {WeightFormat::kBF16, WeightFormat::kFP8, WeightFormat::kFP4}) {
    LinearWeight w;
    w.format = format;
    w.out = out;
    w.in = in;
    const size_t weight_bytes = format == WeightFormat::kBF16 ? out * in * 2 : (format == WeightFormat::kFP8 ? out * in : out * in / 2);
    const size_t scale_bytes = format == WeightFormat::kBF16 ? 0 : (format == WeightFormat::kFP8 ? 3 * 4 : out * in / 32);
    const int64_t groups = 2;
    DeviceBuffer<uint8_t> weight(weight_bytes * groups), scale(std::max<size_t>(scale_bytes * groups, 1));
    cuda::fill_linear_random(weight.data(), scale.data(), code_of(format), out, in, groups, stddev, 7, nullptr);
    const std::vector<uint8_t> wh = download(weight, weight.size());
    const std::vector<uint8_t> sh = download(scale, scale.size());
    double sum = 0, square = 0;
    std::vector<float> row(static_cast<size_t>(in));
    for (int64_t g = 0; g < groups; ++g) {
      w.weight = wh.data() + g * weight_bytes;
      w.scale = sh.data() + g * scale_bytes;
      for (int64_t r = 0; r < out; ++r) {
        w.decode_row(r, row.data());
        for (const float v : row) {
          ASSERT_TRUE(std::isfinite(v));
          sum += v;
          square += static_cast<double>(v) * v;
        }
      }
    }
    const double n = static_cast<double>(groups * out * in);
    const double mean = sum / n, deviation = std::sqrt(square / n - mean * mean);
    std::printf("synthetic %s weights: mean %.2e, stddev %.4f (asked %.4f)\n", format_name(format), mean, deviation,
                stddev);
    EXPECT_LT(std::fabs(mean), 0.02 * stddev);
    EXPECT_NEAR(deviation, stddev, 0.03 * stddev);
    // The two groups differ.
    EXPECT_NE(std::vector<uint8_t>(wh.begin(), wh.begin() + 64),
              std::vector<uint8_t>(wh.begin() + weight_bytes, wh.begin() + weight_bytes + 64));
    if (format == WeightFormat::kFP8) {
      const float* fp8 = fp8_e4m3_table();
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t br = 0; br < 3; ++br) {
          for (int64_t bc = 0; bc < 4; ++bc) {
            float amax = 0;
            for (int64_t r = br * 128; r < br * 128 + 128; ++r) {
              for (int64_t c = bc * 128; c < bc * 128 + 128; ++c) {
                const uint8_t code = wh[static_cast<size_t>(g * out * in + r * in + c)];
                ASSERT_NE(code & 0x7f, 0x7f) << "NaN code";
                amax = std::max(amax, std::fabs(fp8[code]));
              }
            }
            EXPECT_GE(amax, 224.0f);
            EXPECT_LE(amax, 448.0f);
          }
        }
      }
    }
    if (format == WeightFormat::kFP4) {
      const float* fp4 = fp4_e2m1_table();
      for (size_t b = 0; b < static_cast<size_t>(groups * out * in / 32); ++b) {
        float amax = 0;
        for (size_t i = 0; i < 16; ++i) {
          const uint8_t byte = wh[b * 16 + i];
          amax = std::max({amax, std::fabs(fp4[byte & 0xf]), std::fabs(fp4[byte >> 4])});
        }
        ASSERT_TRUE(amax == 3.0f || amax == 4.0f || amax == 6.0f) << "block " << b << " amax " << amax;
      }
    }
  }
}

// Random KV pages hold entries and keys that the cache's codecs read back finite and that are
// representable in the storage format (stored again and read back, the same values; the bytes
// may differ where a block's amax sits on a scale boundary), and a finite compressor state.
TEST(CudaSynthetic, KvPagesHoldValidEntries) {
  const ModelConfig c = small_config();
  for (const KvCacheOptions options : {KvCacheOptions{KvDtype::kF32, IndexerKeyDtype::kF32},
                                       KvCacheOptions{KvDtype::kBF16, IndexerKeyDtype::kBF16},
                                       KvCacheOptions{KvDtype::kFP8, IndexerKeyDtype::kFP4}}) {
    const KvLayout layout = make_kv_layout(c, options);
    const LayerKvLayout& l = layout.layers[0];
    const int64_t window_pages = 3, compressed_pages = 5;
    DeviceBuffer<uint8_t> window(window_pages * l.window_page_bytes), compressed(compressed_pages * l.compressed_page_bytes);
    cuda::fill_kv_pages_random(cuda::make_kv_layer_view(layout, 0, window.data(), compressed.data()), window_pages,
                               compressed_pages, 5, nullptr);
    const std::vector<uint8_t> wh = download(window, window.size());
    const std::vector<uint8_t> ch = download(compressed, compressed.size());
    const KvEntryCodec codec{options.kv_dtype, c.head_dim, c.qk_rope_head_dim};
    const IndexerKeyCodec key_codec{options.indexer_dtype, c.index_head_dim};
    std::vector<float> v(static_cast<size_t>(c.head_dim)), v_again(v.size());
    std::vector<uint8_t> again(l.kv_entry_bytes);
    const auto check_entry = [&](const uint8_t* bytes) {
      codec.decode(bytes, v.data());
      for (const float x : v) ASSERT_TRUE(std::isfinite(x));
      codec.encode(v.data(), again.data());
      codec.decode(again.data(), v_again.data());
      ASSERT_EQ(v, v_again) << "not representable as a " << to_string(options.kv_dtype) << " entry";
    };
    double square = 0;
    int64_t count = 0;
    for (int64_t p = 0; p < window_pages; ++p) {
      const uint8_t* page = wh.data() + p * l.window_page_bytes;
      for (int64_t e = 0; e < l.window_entries; ++e) check_entry(page + e * l.kv_entry_bytes);
      const float* state = reinterpret_cast<const float*>(page + l.state_offset);
      for (size_t f = 0; f < l.state_floats; ++f) ASSERT_TRUE(std::isfinite(state[f]));
      // The first accumulator's running sums are >= 1.
      for (int64_t ch_index = 0; ch_index < l.main_accumulator.channels; ++ch_index) {
        ASSERT_GE(state[l.main_accumulator.sum_offset() + ch_index], 1.0f);
      }
    }
    std::vector<float> key(static_cast<size_t>(c.index_head_dim)), key_values_again(key.size());
    std::vector<uint8_t> key_again(l.indexer_key_bytes);
    for (int64_t p = 0; p < compressed_pages; ++p) {
      const uint8_t* page = ch.data() + p * l.compressed_page_bytes;
      for (int64_t e = 0; e < l.entries_per_page; ++e) {
        check_entry(page + e * l.kv_entry_bytes);
        for (const float x : v) square += static_cast<double>(x) * x;
        count += static_cast<int64_t>(v.size());
        const uint8_t* stored = page + l.indexer_offset + e * l.indexer_key_bytes;
        key_codec.decode(stored, key.data());
        for (const float x : key) ASSERT_TRUE(std::isfinite(x));
        key_codec.encode(key.data(), key_again.data());
        key_codec.decode(key_again.data(), key_values_again.data());
        ASSERT_EQ(key, key_values_again);
      }
    }
    const double rms = std::sqrt(square / static_cast<double>(count));
    std::printf("synthetic KV pages (%s/%s): entries rms %.3f\n", to_string(options.kv_dtype),
                to_string(options.indexer_dtype), rms);
    EXPECT_NEAR(rms, 1.0, 0.1);
    // Distinct pages hold distinct entries.
    EXPECT_NE(0, std::memcmp(ch.data(), ch.data() + l.compressed_page_bytes, l.kv_entry_bytes));
  }
}

}  // namespace
}  // namespace longctx

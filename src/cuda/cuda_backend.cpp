#include "cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "backend/chunk_validation.h"
#include "cuda/cuda_check.h"
#include "cuda/gemm_bf16_split.h"
#include "cuda/gemm_bf16_tc.h"
#include "cuda/gemm_fp8_tc.h"
#include "cuda/kernels.h"
#include "cuda/kv_view.h"
#include "cuda/sampling.h"
#include "cuda/stage_timer.h"
#include "cuda/streams.h"
#include "longctx/error.h"
#include "model/rope.h"

namespace longctx {

using namespace cuda;  // NOLINT: the kernels' namespace

namespace {

// ---------------------------------------------------------------- weights on the device

struct DeviceLinear {
  DeviceBuffer<uint8_t> weight;
  DeviceBuffer<uint8_t> scale;
  LinearView view;
  bool quantize_activations = false;
};

size_t weight_bytes_of(const LinearWeight& w) {
  const size_t out = static_cast<size_t>(w.out);
  const size_t in = static_cast<size_t>(w.in);
  switch (w.format) {
    case WeightFormat::kBF16: return out * in * 2;
    case WeightFormat::kFP8: return out * in;
    case WeightFormat::kFP4: return out * in / 2;
  }
  return 0;
}

size_t scale_bytes_of(const LinearWeight& w) {
  const size_t out = static_cast<size_t>(w.out);
  const size_t in = static_cast<size_t>(w.in);
  switch (w.format) {
    case WeightFormat::kBF16: return 0;
    case WeightFormat::kFP8: return ((out + 127) / 128) * ((in + 127) / 128);
    case WeightFormat::kFP4: return out * (in / 32);
  }
  return 0;
}

int weight_code(WeightFormat format) {
  switch (format) {
    case WeightFormat::kBF16: return kWeightBF16;
    case WeightFormat::kFP8: return kWeightFP8;
    case WeightFormat::kFP4: return kWeightFP4;
  }
  return kWeightBF16;
}

// Where the linear weights come from: the host (a loaded checkpoint), or, for linears with no
// data, random values made on the device (CudaBackend::DeviceRandomWeights).
struct WeightSource {
  bool random = false;
  uint64_t seed = 0;
};

uint64_t name_seed(const std::string& name, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (const char c : name) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

// Fills `groups` stacked copies of w's shape on the device, or fails when random weights were not
// asked for. The embedding is N(0, 1), every other matrix N(0, 1/sqrt(in)), as make-test-model.
void generate_linear(const LinearWeight& w, size_t groups, const WeightSource& source, uint8_t* weight,
                     uint8_t* scale) {
  if (!source.random) fail("CUDA backend: tensor ", w.name, " has no data");
  const float stddev = w.name == "embed" ? 1.0f : static_cast<float>(1.0 / std::sqrt(static_cast<double>(w.in)));
  fill_linear_random(weight, scale, weight_code(w.format), w.out, w.in, static_cast<int64_t>(groups), stddev,
                     name_seed(w.name, source.seed), nullptr);
}

DeviceLinear upload_linear(const LinearWeight& w, const WeightSource& source) {
  DeviceLinear d;
  const size_t weight_bytes = weight_bytes_of(w);
  d.weight.resize(weight_bytes);
  const size_t scale_bytes = scale_bytes_of(w);
  if (scale_bytes > 0) d.scale.resize(scale_bytes);
  if (w.weight == nullptr) {
    generate_linear(w, 1, source, d.weight.data(), d.scale.data());
  } else {
    d.weight.upload(w.weight, weight_bytes);
    if (scale_bytes > 0) d.scale.upload(w.scale, scale_bytes);
  }
  d.view = {d.weight.data(), d.scale.data(), weight_code(w.format), w.out, w.in, 0, 0};
  d.quantize_activations = w.quantize_activations;
  return d;
}

// The same matrix of every routed expert, expert e at e * (its bytes).
DeviceLinear upload_experts(const std::vector<ExpertWeights>& experts, LinearWeight ExpertWeights::*which,
                            const WeightSource& source) {
  DeviceLinear d;
  const LinearWeight& first = experts.front().*which;
  const size_t weight_bytes = weight_bytes_of(first);
  const size_t scale_bytes = scale_bytes_of(first);
  d.weight.resize(weight_bytes * experts.size());
  if (scale_bytes > 0) d.scale.resize(scale_bytes * experts.size());
  for (size_t e = 0; e < experts.size(); ++e) {
    const LinearWeight& w = experts[e].*which;
    if (w.format != first.format || w.out != first.out || w.in != first.in) {
      fail("CUDA backend: expert ", e, " (", w.name, ") differs in format or shape from expert 0");
    }
    if ((w.weight == nullptr) != (first.weight == nullptr)) {
      fail("CUDA backend: expert ", e, " (", w.name, ") has data where expert 0 has none, or the reverse");
    }
    if (w.weight == nullptr) continue;
    d.weight.upload(w.weight, weight_bytes, e * weight_bytes);
    if (scale_bytes > 0) d.scale.upload(w.scale, scale_bytes, e * scale_bytes);
  }
  // Generated experts: one stream over the stacked matrices, so each expert differs.
  if (first.weight == nullptr) generate_linear(first, experts.size(), source, d.weight.data(), d.scale.data());
  d.view = {d.weight.data(), d.scale.data(), weight_code(first.format), first.out, first.in,
            static_cast<int64_t>(weight_bytes), static_cast<int64_t>(scale_bytes)};
  d.quantize_activations = first.quantize_activations;
  return d;
}

struct DeviceHc {
  DeviceBuffer<float> fn, base, scale;
  HyperConnectionView view() const { return {fn.data(), base.data(), scale.data()}; }
};

DeviceHc upload_hc(const HyperConnectionWeights& w) {
  DeviceHc d;
  d.fn = to_device(w.fn);
  d.base = to_device(w.base);
  d.scale = to_device(w.scale);
  return d;
}

struct DeviceCompressor {
  DeviceLinear wkv, wgate;
  DeviceBuffer<float> ape, norm;
  CompressorView view;
};

DeviceCompressor upload_compressor(const CompressorWeights& w, const WeightSource& source) {
  DeviceCompressor d;
  d.wkv = upload_linear(w.wkv, source);
  d.wgate = upload_linear(w.wgate, source);
  d.ape = to_device(w.ape);
  d.norm = to_device(w.norm);
  d.view = {d.ape.data(), d.norm.data(), w.ratio, w.overlap ? 1 : 0, static_cast<int>(w.head_dim)};
  return d;
}

struct DeviceExpert {
  DeviceLinear w1, w2, w3;
};

struct DeviceBlock {
  const BlockWeights* host = nullptr;
  DeviceHc hc_attn, hc_ffn;
  DeviceBuffer<float> attn_norm, ffn_norm;
  DeviceLinear wq_a, wq_b, wkv, wo_a, wo_b;
  DeviceBuffer<float> q_norm, kv_norm, attn_sink;
  std::optional<DeviceCompressor> compressor;
  std::optional<DeviceLinear> index_wq_b, index_weights_proj;
  std::optional<DeviceCompressor> index_compressor;
  DeviceLinear gate;
  DeviceBuffer<float> gate_bias;
  DeviceBuffer<int32_t> tid2eid;
  DeviceExpert experts;  // all routed experts, stacked
  std::optional<DeviceExpert> shared;
};

DeviceBlock upload_block(const BlockWeights& b, const WeightSource& source) {
  DeviceBlock d;
  d.host = &b;
  d.hc_attn = upload_hc(b.hc_attn);
  d.hc_ffn = upload_hc(b.hc_ffn);
  d.attn_norm = to_device(b.attn_norm);
  d.ffn_norm = to_device(b.ffn_norm);
  const AttentionWeights& a = b.attn;
  d.wq_a = upload_linear(a.wq_a, source);
  d.wq_b = upload_linear(a.wq_b, source);
  d.wkv = upload_linear(a.wkv, source);
  d.wo_a = upload_linear(a.wo_a, source);
  d.wo_b = upload_linear(a.wo_b, source);
  d.q_norm = to_device(a.q_norm);
  d.kv_norm = to_device(a.kv_norm);
  d.attn_sink = to_device(a.attn_sink);
  if (a.compressor) d.compressor = upload_compressor(*a.compressor, source);
  if (a.indexer) {
    d.index_wq_b = upload_linear(a.indexer->wq_b, source);
    d.index_weights_proj = upload_linear(a.indexer->weights_proj, source);
    d.index_compressor = upload_compressor(a.indexer->compressor, source);
  }
  d.gate = upload_linear(b.ffn.gate, source);
  if (!b.ffn.gate_bias.empty()) d.gate_bias = to_device(b.ffn.gate_bias);
  if (!b.ffn.tid2eid.empty()) d.tid2eid = to_device(b.ffn.tid2eid);
  d.experts.w1 = upload_experts(b.ffn.experts, &ExpertWeights::w1, source);
  d.experts.w2 = upload_experts(b.ffn.experts, &ExpertWeights::w2, source);
  d.experts.w3 = upload_experts(b.ffn.experts, &ExpertWeights::w3, source);
  if (b.ffn.shared) {
    d.shared = DeviceExpert{upload_linear(b.ffn.shared->w1, source), upload_linear(b.ffn.shared->w2, source),
                            upload_linear(b.ffn.shared->w3, source)};
  }
  return d;
}

struct DeviceMtp {
  DeviceBlock block;
  DeviceLinear e_proj, h_proj;
  DeviceBuffer<float> enorm, hnorm, norm;
  DeviceHc hc_head;
};

size_t device_bytes(const DeviceLinear& l) { return l.weight.bytes() + l.scale.bytes(); }

constexpr int64_t kPositionBucket = 8192;

}  // namespace

// ---------------------------------------------------------------- the backend

struct CudaBackend::Impl {
  const ModelWeights& weights;
  const ModelConfig& config;
  KvLayout layout;
  KvPoolSizes sizes;
  cudaStream_t stream = nullptr;
  int sm_count = 132;

  DeviceBuffer<uint8_t> embed;  // bf16 [vocab, hidden]
  DeviceLinear head;
  DeviceBuffer<float> norm;
  DeviceHc final_hc;
  std::vector<DeviceBlock> blocks;
  std::vector<DeviceMtp> mtp;
  DeviceBuffer<float> window_inv_freq, compressed_inv_freq;

  std::vector<DeviceBuffer<uint8_t>> window_pages;      // [layer]
  std::vector<DeviceBuffer<uint8_t>> compressed_pages;  // [layer]

  // Step inputs: one int32 upload holding chunks, tables, tokens, positions and row indices.
  std::vector<int32_t> meta_host;
  DeviceBuffer<int32_t> meta;
  BatchView batch;
  const int32_t* tokens = nullptr;
  const int32_t* logit_rows = nullptr;
  int64_t rows = 0;
  int64_t logit_count = 0;
  int64_t max_position = 0;
  // Positions rounded up to kPositionBucket: the launch shapes that depend on the context
  // (indexer grid and score stride, attention splits) use it, so a decode graph stays valid
  // until the context crosses a bucket.
  int64_t position_cap = 0;
  // Bumped whenever a device buffer is reallocated: captured graphs hold raw pointers.
  uint64_t epoch = 0;

  // Decode steps (one token per sequence) replay CUDA graphs, one per batch size and bucket.
  struct GraphKey {
    int64_t rows;
    bool return_hidden;
    int64_t position_cap;
    uint64_t epoch;
    auto operator<=>(const GraphKey&) const = default;
  };
  std::map<GraphKey, cudaGraphExec_t> graphs;
  std::set<GraphKey> seen_once;
  uint64_t graphs_epoch = 0;
  bool use_graphs = true;
  bool wo_a_tensor_cores = true;  // LONGCTX_CUDA_WO_A_TC=0: wo_a on the fp32 kernels (A/B runs)
  // LONGCTX_CUDA_BF16_SPLIT=0: the bf16-weight linears on the fp32 kernels (A/B runs).
  bool bf16_split = true;
  int64_t bf16_widest_in = 0;  // the widest input of a non-grouped bf16 linear (split scratch)
  bool fp8_codes = true;  // LONGCTX_CUDA_FP8_CODES=0: fp8 inputs as simulated fp32 copies (A/B runs)

  // Activations and scratch, grown on demand.
  DeviceBuffer<float> streams, x, xq, out, post, comb;
  DeviceBuffer<float> q_lora, q, kv, attended, low_rank;
  DeviceBuffer<float> comp_kv, comp_score, index_q, index_w, index_kv, index_score, scores;
  DeviceBuffer<float> index_pack;  // indexer_scores workspace (packed int8 queries)
  DeviceBuffer<float> topk_split;  // topk_rows workspace (few-row steps split rows over blocks)
  DeviceBuffer<int32_t> selected, selected_counts;
  DeviceBuffer<float> router_logits, route_weights, slot_weights, expert_gate, expert_up, expert_hidden,
      slot_out, shared_gate, shared_up, shared_hidden, shared_out;
  DeviceBuffer<int32_t> route_experts, expert_counts, expert_offsets, expert_fill, slot_rows, entry_slot,
      active_experts;
  DeviceBuffer<float> head_in, logits, hidden_out, mtp_e, mtp_ep;
  DeviceBuffer<float> partial;
  DeviceBuffer<uint8_t> tc_scratch;  // the tensor-core grouped GEMM's (LinearWorkspace::tc_scratch)
  // Speculative decoding: every layer's compressor state after each row, [rows][snapshot_floats]
  // (layers at snapshot_offsets), taken while `take_snapshots` and copied to the chunks' host
  // buffers after the step.
  DeviceBuffer<float> snapshots;
  std::vector<size_t> snapshot_offsets;  // per layer
  size_t snapshot_floats = 0;
  bool take_snapshots = false;
  LinearWorkspace workspace;
  // The side lane: a second stream with its own linear scratch. In an attention layer the
  // compressor projections, the compressors and the indexer run on it while the main stream
  // projects q and kv; in an MoE layer the shared expert runs on it while the main stream runs the
  // routed experts (attention(), moe()). The kernels and their inputs are the same either way, so
  // the results are bitwise those of one stream. The side lane's work goes to the main stream
  // while stage timing is on, or with LONGCTX_CUDA_STREAMS=0 (A/B runs).
  std::optional<Stream> side_stream;
  std::optional<Handoff> handoff;
  bool overlap = true;
  LinearWorkspace side_workspace;
  DeviceBuffer<float> side_partial, side_xq;
  DeviceBuffer<uint8_t> side_blas_workspace, side_fp8_scratch, side_split_scratch;
  StageTimer timer;
  CudaOptions options;  // tensor_core_min_rows == 0: tensor cores off (batch-invariant)
  // The fp8 tensor-core GEMM's cuBLASLt handle, its workspace and the quantized activations, and
  // the bf16 weight and activations of wo_a's bf16 tensor-core GEMM (allocated only when tensor
  // cores are on).
  std::unique_ptr<BlasLtHandle> blas;
  DeviceBuffer<uint8_t> blas_workspace, fp8_scratch, bf16_scratch, split_scratch;
  // Fp8Activations (kernels.h) of the block input x (wq_a + wkv, shared w1 + w3), of the normed
  // q_lora (wq_b + indexer wq_b) and of the shared expert's hidden (side lane); a single linear's
  // own input goes to its lane's xq, as its simulated copy did.
  DeviceBuffer<uint8_t> input_codes, q_codes, shared_codes;
  DeviceBuffer<float> hc_workspace;
  DeviceBuffer<float> attention_workspace;
  WeightSource source;
  KvAllocation kv_allocation;
  // Sampling on the device: the logit rows of the latest forward stay in `logits`.
  cuda::DeviceSampler sampler;
  bool logits_on_device = false;
  int64_t sampleable_rows = 0;

  Impl(const ModelWeights& w, const KvLayout& l, const KvPoolSizes& s, const CudaOptions& o, WeightSource weight_source)
      : weights(w), config(w.config), layout(l), sizes(s), options(o), source(weight_source) {
    const int device = options.device;
    LONGCTX_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp properties{};
    LONGCTX_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
    if (properties.major != 9) {
      fail("CUDA backend: built for Hopper (sm_90a), found ", properties.name, " (sm_", properties.major,
           properties.minor, ")");
    }
    sm_count = properties.multiProcessorCount;
    LONGCTX_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    side_stream.emplace();
    handoff.emplace();
    if (config.hc_mult > 4) fail("CUDA backend: hc_mult ", config.hc_mult, " above 4");
    if (layout.compressed_ratios.size() > static_cast<size_t>(kMaxCompressedPools)) {
      fail("CUDA backend: at most ", kMaxCompressedPools, " compression ratios");
    }
    upload_weights();
    allocate_kv();
    for (const LayerKvLayout& kv_layer : layout.layers) {
      snapshot_offsets.push_back(snapshot_floats);
      snapshot_floats += kv_layer.state_floats;
    }
    // Generated weights and the pool memsets ran on the legacy default stream, which the
    // non-blocking `stream` does not wait for.
    LONGCTX_CUDA_CHECK(cudaDeviceSynchronize());
    partial.resize(size_t{16} << 20);
    workspace = {partial.data(), partial.size(), sm_count};
    const char* tensor_env = std::getenv("LONGCTX_CUDA_TENSOR_CORES");  // "0": A/B runs
    if (options.batch_invariant || (tensor_env != nullptr && std::string(tensor_env) == "0")) {
      options.tensor_core_min_rows = 0;
    }
    workspace.tensor_core_min_rows = options.tensor_core_min_rows;
    if (options.tensor_core_min_rows > 0) {
      blas = std::make_unique<BlasLtHandle>();
      blas_workspace.resize(kFp8TcBlasWorkspaceBytes);
      workspace.blas_handle = blas->get();
      workspace.blas_workspace = blas_workspace.data();
      workspace.blas_workspace_bytes = blas_workspace.size();
    }
    // The side lane runs no grouped linear (no tensor-core grouped scratch) and no wo_a (no bf16
    // scratch); its split-K partials are smaller (fewer partials only mean fewer splits, never
    // other bits).
    side_partial.resize(size_t{4} << 20);
    side_workspace = workspace;
    side_workspace.partial = side_partial.data();
    side_workspace.floats = side_partial.size();
    side_workspace.tc_scratch = nullptr;
    side_workspace.tc_scratch_bytes = 0;
    if (blas) {
      side_blas_workspace.resize(kFp8TcBlasWorkspaceBytes);
      side_workspace.blas_workspace = side_blas_workspace.data();
      side_workspace.blas_workspace_bytes = side_blas_workspace.size();
    }
    const char* streams_env = std::getenv("LONGCTX_CUDA_STREAMS");
    overlap = streams_env == nullptr || std::string(streams_env) != "0";
    attention_workspace.resize(size_t{64} << 20);
    const char* graphs_env = std::getenv("LONGCTX_CUDA_GRAPHS");
    use_graphs = graphs_env == nullptr || std::string(graphs_env) != "0";
    const char* wo_a_env = std::getenv("LONGCTX_CUDA_WO_A_TC");
    wo_a_tensor_cores = wo_a_env == nullptr || std::string(wo_a_env) != "0";
    const char* codes_env = std::getenv("LONGCTX_CUDA_FP8_CODES");
    fp8_codes = codes_env == nullptr || std::string(codes_env) != "0";
    const char* split_env = std::getenv("LONGCTX_CUDA_BF16_SPLIT");
    bf16_split = split_env == nullptr || std::string(split_env) != "0";
    const auto widen = [&](const DeviceLinear& linear_weight) {
      if (linear_weight.view.format == kWeightBF16) bf16_widest_in = std::max(bf16_widest_in, linear_weight.view.in);
    };
    const auto widen_block = [&](const DeviceBlock& b) {
      for (const DeviceLinear* p : {&b.wq_a, &b.wq_b, &b.wkv, &b.wo_b, &b.gate}) widen(*p);
      for (const auto* compressor : {&b.compressor, &b.index_compressor}) {
        if (*compressor) {
          widen((*compressor)->wkv);
          widen((*compressor)->wgate);
        }
      }
      if (b.index_wq_b) widen(*b.index_wq_b);
      if (b.index_weights_proj) widen(*b.index_weights_proj);
      if (b.shared) {
        for (const DeviceLinear* p : {&b.shared->w1, &b.shared->w2, &b.shared->w3}) widen(*p);
      }
    };
    widen(head);
    for (const DeviceBlock& b : blocks) widen_block(b);
    for (const DeviceMtp& m : mtp) {
      widen_block(m.block);
      widen(m.e_proj);
      widen(m.h_proj);
    }
  }

  // Tensor cores allowed at all (not batch-invariant).
  bool fast_mode() const { return options.tensor_core_min_rows > 0; }
  // Whether a step of `count` rows runs the tensor-core GEMMs (off in batch-invariant mode).
  bool tensor_cores(int64_t count) const {
    return options.tensor_core_min_rows > 0 && count >= options.tensor_core_min_rows;
  }

  ~Impl() {
    drop_graphs();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  void drop_graphs() {
    for (auto& [key, exec] : graphs) cudaGraphExecDestroy(exec);
    graphs.clear();
    seen_once.clear();
  }

  template <typename T>
  void grow(DeviceBuffer<T>& buffer, size_t count) {
    if (count > buffer.size()) {
      LONGCTX_CUDA_CHECK(cudaStreamSynchronize(side_stream->get()));
      LONGCTX_CUDA_CHECK(cudaStreamSynchronize(stream));
      buffer.resize(count);
      ++epoch;
    }
  }

  void upload_weights() {
    if (weights.embed.format != WeightFormat::kBF16) fail("CUDA backend: the embedding must be bf16");
    const size_t embed_bytes = weight_bytes_of(weights.embed);
    embed.resize(embed_bytes);
    if (weights.embed.weight == nullptr) {
      generate_linear(weights.embed, 1, source, embed.data(), nullptr);
    } else {
      embed.upload(weights.embed.weight, embed_bytes);
    }
    head = upload_linear(weights.head, source);
    norm = to_device(weights.norm);
    final_hc = upload_hc(weights.hc_head);
    for (const BlockWeights& b : weights.layers) blocks.push_back(upload_block(b, source));
    for (const MtpWeights& m : weights.mtp) {
      DeviceMtp d;
      d.block = upload_block(m.block, source);
      d.e_proj = upload_linear(m.e_proj, source);
      d.h_proj = upload_linear(m.h_proj, source);
      d.enorm = to_device(m.enorm);
      d.hnorm = to_device(m.hnorm);
      d.norm = to_device(m.norm);
      d.hc_head = upload_hc(m.hc_head);
      mtp.push_back(std::move(d));
    }
    window_inv_freq = to_device(RopeTable::for_layer(config, 0).inverse_frequencies());
    compressed_inv_freq = to_device(RopeTable::for_layer(config, 4).inverse_frequencies());
  }

  void allocate_kv() {
    size_t free_before = 0, free_after = 0, total = 0;
    LONGCTX_CUDA_CHECK(cudaDeviceSynchronize());
    LONGCTX_CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
    for (const LayerKvLayout& l : layout.layers) {
      DeviceBuffer<uint8_t> window(static_cast<size_t>(sizes.window_pages) * l.window_page_bytes);
      LONGCTX_CUDA_CHECK(cudaMemset(window.data(), 0, window.bytes()));
      kv_allocation.window_bytes += window.bytes();
      window_pages.push_back(std::move(window));
      DeviceBuffer<uint8_t> compressed;
      if (l.compressed_pool >= 0) {
        compressed.resize(static_cast<size_t>(sizes.compressed_pages.at(static_cast<size_t>(l.compressed_pool))) *
                          l.compressed_page_bytes);
        LONGCTX_CUDA_CHECK(cudaMemset(compressed.data(), 0, compressed.bytes()));
        kv_allocation.compressed_bytes += compressed.bytes();
      }
      compressed_pages.push_back(std::move(compressed));
    }
    LONGCTX_CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
    kv_allocation.device_bytes = free_before > free_after ? free_before - free_after : 0;
  }

  void fill_kv_random(uint64_t seed) {
    LONGCTX_CUDA_CHECK(cudaStreamSynchronize(stream));
    for (size_t layer = 0; layer < layout.layers.size(); ++layer) {
      const LayerKvLayout& l = layout.layers[layer];
      const int64_t compressed =
          l.compressed_pool >= 0 ? sizes.compressed_pages.at(static_cast<size_t>(l.compressed_pool)) : 0;
      fill_kv_pages_random(kv_view(static_cast<int64_t>(layer)), sizes.window_pages, compressed,
                           seed + 0x100000001b3ull * layer, stream);
    }
    LONGCTX_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  KvLayerView kv_view(int64_t layer) {
    return make_kv_layer_view(layout, layer, window_pages[static_cast<size_t>(layer)].data(),
                              compressed_pages[static_cast<size_t>(layer)].data());
  }

  // ---- step preparation

  struct ChunkRef {
    std::span<const int32_t> tokens;
    int64_t start_pos;
    const BlockTables* blocks;
    int64_t num_logits;
  };

  void prepare(const std::vector<ChunkRef>& chunks) {
    std::vector<ChunkInfo> infos;
    std::vector<int32_t> tables, token_list, positions, row_chunk, logit_list;
    rows = 0;
    max_position = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const ChunkRef& c = chunks[i];
      ChunkInfo info;
      const int64_t size = static_cast<int64_t>(c.tokens.size());
      info.first_row = static_cast<int32_t>(rows);
      info.rows = static_cast<int32_t>(size);
      info.start_pos = static_cast<int32_t>(c.start_pos);
      info.window_table = static_cast<int32_t>(tables.size());
      info.window_blocks = static_cast<int32_t>(c.blocks->window.size());
      tables.insert(tables.end(), c.blocks->window.begin(), c.blocks->window.end());
      for (size_t pool = 0; pool < c.blocks->compressed.size(); ++pool) {
        info.compressed_table[pool] = static_cast<int32_t>(tables.size());
        info.compressed_blocks[pool] = static_cast<int32_t>(c.blocks->compressed[pool].size());
        tables.insert(tables.end(), c.blocks->compressed[pool].begin(), c.blocks->compressed[pool].end());
      }
      infos.push_back(info);
      token_list.insert(token_list.end(), c.tokens.begin(), c.tokens.end());
      for (int64_t r = 0; r < size; ++r) {
        positions.push_back(static_cast<int32_t>(c.start_pos + r));
        row_chunk.push_back(static_cast<int32_t>(i));
      }
      for (int64_t r = size - c.num_logits; r < size; ++r) logit_list.push_back(static_cast<int32_t>(rows + r));
      rows += size;
      max_position = std::max(max_position, c.start_pos + size - 1);
    }
    logit_count = static_cast<int64_t>(logit_list.size());
    // One upload: [chunks | tokens | positions | row chunk | logit rows | tables]. For a given
    // batch shape everything but the tables has a fixed offset, and the tables' offsets are
    // data (ChunkInfo), so the kernels' pointers stay the same from step to step.
    static_assert(sizeof(ChunkInfo) % sizeof(int32_t) == 0);
    const size_t chunk_ints = infos.size() * sizeof(ChunkInfo) / sizeof(int32_t);
    const size_t tokens_at = chunk_ints;
    const size_t positions_at = tokens_at + token_list.size();
    const size_t row_chunk_at = positions_at + positions.size();
    const size_t logits_at = row_chunk_at + row_chunk.size();
    const size_t tables_at = logits_at + logit_list.size();
    for (ChunkInfo& info : infos) {
      info.window_table += static_cast<int32_t>(tables_at);
      for (int pool = 0; pool < kMaxCompressedPools; ++pool) info.compressed_table[pool] += static_cast<int32_t>(tables_at);
    }
    meta_host.resize(chunk_ints);
    if (!infos.empty()) std::memcpy(meta_host.data(), infos.data(), infos.size() * sizeof(ChunkInfo));
    meta_host.insert(meta_host.end(), token_list.begin(), token_list.end());
    meta_host.insert(meta_host.end(), positions.begin(), positions.end());
    meta_host.insert(meta_host.end(), row_chunk.begin(), row_chunk.end());
    meta_host.insert(meta_host.end(), logit_list.begin(), logit_list.end());
    meta_host.insert(meta_host.end(), tables.begin(), tables.end());
    if (meta_host.size() > meta.size()) {
      LONGCTX_CUDA_CHECK(cudaStreamSynchronize(stream));
      meta.resize(meta_host.size() * 2);  // headroom: tables grow by one page per 256 positions
      ++epoch;
    }
    LONGCTX_CUDA_CHECK(cudaMemcpyAsync(meta.data(), meta_host.data(), meta_host.size() * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, stream));
    batch.chunks = reinterpret_cast<const ChunkInfo*>(meta.data());
    batch.num_chunks = static_cast<int>(infos.size());
    batch.tables = meta.data();
    batch.row_pos = meta.data() + positions_at;
    batch.row_chunk = meta.data() + row_chunk_at;
    batch.rows = rows;
    tokens = meta.data() + tokens_at;
    logit_rows = meta.data() + logits_at;
    position_cap = (max_position + 1 + kPositionBucket - 1) / kPositionBucket * kPositionBucket;

    const ModelConfig& c = config;
    const size_t n = static_cast<size_t>(rows);
    const size_t hidden = static_cast<size_t>(c.hidden_size);
    const size_t hc = static_cast<size_t>(c.hc_mult);
    grow(streams, n * hc * hidden);
    grow(x, n * hc * hidden);  // also holds MTP's normed streams
    grow(xq, n * std::max({hc * hidden, static_cast<size_t>(c.o_groups * c.o_lora_rank),
                             static_cast<size_t>(c.q_lora_rank), static_cast<size_t>(c.moe_intermediate_size)}));
    grow(out, n * hidden);
    grow(post, n * hc);
    grow(comb, n * hc * hc);
    grow(q_lora, n * static_cast<size_t>(c.q_lora_rank));
    grow(q, n * static_cast<size_t>(c.num_attention_heads * c.head_dim));
    grow(kv, n * static_cast<size_t>(c.head_dim));
    grow(attended, n * static_cast<size_t>(c.num_attention_heads * c.head_dim));
    grow(low_rank, n * static_cast<size_t>(c.o_groups * c.o_lora_rank));
    grow(comp_kv, n * static_cast<size_t>(2 * c.head_dim));
    grow(comp_score, n * static_cast<size_t>(2 * c.head_dim));
    grow(index_q, n * static_cast<size_t>(c.index_n_heads * c.index_head_dim));
    grow(index_w, n * static_cast<size_t>(c.index_n_heads));
    grow(index_kv, n * static_cast<size_t>(2 * c.index_head_dim));
    grow(index_score, n * static_cast<size_t>(2 * c.index_head_dim));
    grow(selected, n * static_cast<size_t>(c.index_topk));
    grow(selected_counts, n);
    const size_t k = static_cast<size_t>(c.num_experts_per_tok);
    const size_t inter = static_cast<size_t>(c.moe_intermediate_size);
    const size_t experts = static_cast<size_t>(c.n_routed_experts);
    grow(router_logits, n * experts);
    grow(route_experts, n * k);
    grow(route_weights, n * k);
    grow(expert_counts, experts);
    grow(expert_offsets, experts);
    grow(expert_fill, experts);
    grow(active_experts, experts);
    grow(slot_rows, n * k);
    grow(slot_weights, n * k);
    grow(entry_slot, n * k);
    grow(expert_gate, n * k * inter);
    grow(expert_up, n * k * inter);
    grow(expert_hidden, n * k * inter);
    grow(slot_out, n * k * hidden);
    if (tensor_cores(rows * static_cast<int64_t>(k))) {
      // The routed experts' tensor-core path: quantized slots (and converted fp4 experts where the
      // conversion pass beats converting inside the GEMM: grouped_gemm_tc.cu).
      const int64_t slots = rows * static_cast<int64_t>(k);
      const int groups = static_cast<int>(experts);
      size_t bytes = 0;
      const auto need = [&](const DeviceBlock& b) {
        for (const DeviceLinear* w : {&b.experts.w1, &b.experts.w2}) {
          bytes = std::max(bytes, grouped_linear_tc_scratch_bytes(w->view, groups, slots));
        }
      };
      for (const DeviceBlock& b : blocks) need(b);
      for (const DeviceMtp& m : mtp) need(m.block);
      grow(tc_scratch, bytes);
      workspace.tc_scratch = tc_scratch.data();
      workspace.tc_scratch_bytes = tc_scratch.size();
    }
    grow(shared_gate, n * inter);
    grow(shared_up, n * inter);
    grow(shared_hidden, n * inter);
    grow(shared_out, n * hidden);
    grow(side_xq, n * inter);  // the shared expert's w2 input
    const size_t logit_rows_count = static_cast<size_t>(std::max<int64_t>(logit_count, 1));
    grow(head_in, logit_rows_count * hidden);
    grow(logits, logit_rows_count * static_cast<size_t>(c.vocab_size));
    grow(hidden_out, logit_rows_count * hc * hidden);
    grow(mtp_e, n * hidden);
    grow(hc_workspace, hc_workspace_floats(std::max<int64_t>(rows, logit_count), static_cast<int>(hc),
                                             static_cast<int64_t>(hidden)));
    grow(mtp_ep, n * hidden);
    if (options.tensor_core_min_rows > 0) {
      // The widest fp8 linear input: wo_a's heads x head_dim, MTP's h_proj on hc x rows.
      const size_t widest = std::max({hc * hidden, static_cast<size_t>(c.num_attention_heads * c.head_dim),
                                      static_cast<size_t>(c.o_groups * c.o_lora_rank),
                                      static_cast<size_t>(c.q_lora_rank), inter});
      grow(fp8_scratch, fp8_tc_scratch_bytes(rows, static_cast<int64_t>(widest)));
      workspace.fp8_scratch = fp8_scratch.data();
      workspace.fp8_scratch_bytes = fp8_scratch.size();
      // The side lane's fp8 linears: the shared expert's (inputs hidden and inter wide).
      grow(side_fp8_scratch, fp8_tc_scratch_bytes(rows, static_cast<int64_t>(std::max(hidden, inter))));
      side_workspace.fp8_scratch = side_fp8_scratch.data();
      side_workspace.fp8_scratch_bytes = side_fp8_scratch.size();
      grow(input_codes, fp8_activation_bytes(rows, static_cast<int64_t>(hidden)));
      grow(q_codes, fp8_activation_bytes(rows, c.q_lora_rank));
      grow(shared_codes, fp8_activation_bytes(rows, c.moe_intermediate_size));
    }
    if (tensor_cores(rows)) {
      // wo_a's bf16 path: its bf16 weight (67 MB on V4-Flash) and up to kBf16TcPassRows bf16
      // activation rows (256 MB), the same shape in every layer and MTP block.
      const int64_t heads_d = static_cast<int64_t>(c.num_attention_heads) * c.head_dim;
      const int64_t low_rank_width = static_cast<int64_t>(c.o_groups) * c.o_lora_rank;
      grow(bf16_scratch, bf16_tc_scratch_bytes(low_rank_width, heads_d / c.o_groups, rows, heads_d));
      workspace.bf16_scratch = bf16_scratch.data();
      workspace.bf16_scratch_bytes = bf16_scratch.size();
      // The bf16-weight linears' split activations (gemm_bf16_split.h): up to kBf16SplitPassRows
      // rows of the widest bf16 input (96 MiB on V4-Flash); MTP's h_proj takes hc x rows rows.
      if (bf16_split && bf16_widest_in > 0) {
        grow(split_scratch, bf16_split_scratch_bytes(rows * static_cast<int64_t>(hc), bf16_widest_in));
        workspace.split_scratch = split_scratch.data();
        workspace.split_scratch_bytes = split_scratch.size();
        // The side lane's own: the compressor and indexer projections run there.
        grow(side_split_scratch, bf16_split_scratch_bytes(rows, bf16_widest_in));
        side_workspace.split_scratch = side_split_scratch.data();
        side_workspace.split_scratch_bytes = side_split_scratch.size();
      }
    }
    if (layout.compressed_ratios.size() > 0 && layout.compressed_ratios.front() == 4) {
      const int64_t max_visible = position_cap / 4;
      grow(scores, static_cast<size_t>(score_slice(max_visible) * max_visible));
      grow(index_pack, (indexer_workspace_bytes(score_slice(max_visible)) + 3) / 4);
      grow(topk_split, (topk_workspace_bytes(score_slice(max_visible), max_visible) + 3) / 4);
    }
  }

  // Rows of indexer scores computed per launch: the score matrix stays under 256 MB.
  int64_t score_slice(int64_t max_visible) const {
    return std::max<int64_t>(1, std::min<int64_t>(rows, (int64_t{64} << 20) / max_visible));
  }

  // ---- building blocks

  // Where linears run: a stream, the scratch its calls use and its buffer for fp8-simulated
  // activations (xq, of xq_floats). The two lanes share no scratch, so their work may overlap.
  struct Lane {
    cudaStream_t stream;
    const LinearWorkspace* workspace;
    float* xq;
    size_t xq_floats;
  };
  Lane main_lane() { return {stream, &workspace, xq.data(), xq.size()}; }
  Lane side_lane() {
    const bool separate = overlap && !timer.enabled();  // the timer charges stages on one stream
    return {separate ? side_stream->get() : stream, &side_workspace, side_xq.data(), side_xq.size()};
  }

  // y = x W^T over `count` rows; x is fp8-simulated first when the weight asks (x_quantized, when
  // given, already holds that). In fast-mode steps where the weight takes the tensor-core GEMM,
  // x goes to it as e4m3 codes made in one pass (into the lane's xq), with no fp32 copy.
  void project(const Lane& lane, const DeviceLinear& w, const float* x_in, int64_t count, float* y,
               const float* x_quantized = nullptr) {
    const float* input = x_in;
    if (w.quantize_activations) {
      if (x_quantized == nullptr && codes_for({&w}, count, *lane.workspace) &&
          fp8_activation_bytes(count, w.view.in) <= lane.xq_floats * sizeof(float)) {
        const Fp8Activations codes = fp8_quantize_activations(x_in, w.view.in, count, w.view.in, lane.xq, lane.stream);
        linear_fp8(w.view, codes, y, w.view.out, *lane.workspace, lane.stream);
        return;
      }
      if (x_quantized == nullptr) {
        if (static_cast<size_t>(count * w.view.in) > lane.xq_floats) {
          fail("CUDA backend: ", count, " x ", w.view.in, " activations exceed the lane's buffer");
        }
        fp8_simulate_rows(x_in, count, w.view.in, w.view.in, lane.xq, w.view.in, lane.stream);
        x_quantized = lane.xq;
      }
      input = x_quantized;
    }
    linear(w.view, input, w.view.in, count, y, w.view.out, 0, workspace_for(w, *lane.workspace), lane.stream);
  }
  void project(const DeviceLinear& w, const float* x_in, int64_t count, float* y,
               const float* x_quantized = nullptr) {
    project(main_lane(), w, x_in, count, y, x_quantized);
  }

  // The fp8 tensor-core GEMM takes e4m3 activations: only for weights whose activations the
  // reference quantizes. bf16 weights get the split bf16 GEMM at fp32 accuracy (gemm_bf16_split.h).
  // The grouped wo_a keeps its activations in bf16: linear() gives it the bf16
  // tensor-core GEMM (gemm_bf16_tc.h), never the fp8 one.
  LinearWorkspace workspace_for(const DeviceLinear& w, const LinearWorkspace& base, bool grouped_wo_a = false) const {
    LinearWorkspace ws = base;
    const bool split = w.view.format == kWeightBF16 && !grouped_wo_a && bf16_split;
    if (!w.quantize_activations && !(grouped_wo_a && wo_a_tensor_cores) && !split) ws.tensor_core_min_rows = 0;
    return ws;
  }

  const float* quantized_copy(const float* x_in, int64_t count, int64_t cols) {
    fp8_simulate_rows(x_in, count, cols, cols, xq.data(), cols, stream);
    return xq.data();
  }

  // One input of several fp8 linears: its e4m3 codes, or its fp8-simulated fp32 copy (or both).
  struct QuantizedInput {
    const float* simulated = nullptr;
    std::optional<Fp8Activations> codes;
  };

  // Whether the input of `consumers` (null entries skipped) goes to them as e4m3 codes: fast-mode
  // steps where every one that quantizes its activations takes the fp8 tensor-core GEMM with the
  // scratch of `lane_workspace`. The batch-invariant mode and smaller steps keep the simulated copy.
  bool codes_for(std::initializer_list<const DeviceLinear*> consumers, int64_t count,
                 const LinearWorkspace& lane_workspace) const {
    if (!fp8_codes || !tensor_cores(count)) return false;
    bool any = false;
    for (const DeviceLinear* w : consumers) {
      if (w == nullptr || !w->quantize_activations) continue;
      if (!fp8_tc_supported(w->view, count, lane_workspace)) return false;
      any = true;
    }
    return any;
  }

  // x [count, width] for `consumers` (main lane): one pass to codes in `buffer` when codes_for()
  // (also writing the simulated copy to xq when `keep_simulated`: the routed experts read it), else
  // the simulated copy in xq. Consumers on the side lane must pass codes_for() with its scratch too.
  QuantizedInput quantize_input(const float* x_in, int64_t count, int64_t width,
                                std::initializer_list<const DeviceLinear*> consumers, DeviceBuffer<uint8_t>& buffer,
                                bool keep_simulated = false) {
    QuantizedInput input;
    if (codes_for(consumers, count, workspace) && codes_for(consumers, count, side_workspace)) {
      float* simulated = keep_simulated ? xq.data() : nullptr;
      input.codes = fp8_quantize_activations(x_in, width, count, width, buffer.data(), stream, simulated, width);
      input.simulated = simulated;
    } else {
      input.simulated = quantized_copy(x_in, count, width);
    }
    return input;
  }

  void project(const Lane& lane, const DeviceLinear& w, const float* x_in, int64_t count, float* y,
               const QuantizedInput& x_quantized) {
    if (w.quantize_activations && x_quantized.codes) {
      linear_fp8(w.view, *x_quantized.codes, y, w.view.out, *lane.workspace, lane.stream);
      return;
    }
    project(lane, w, x_in, count, y, x_quantized.simulated);
  }
  void project(const DeviceLinear& w, const float* x_in, int64_t count, float* y, const QuantizedInput& x_quantized) {
    project(main_lane(), w, x_in, count, y, x_quantized);
  }

  void attention(const DeviceBlock& b, float* x_in, float* result) {
    const ModelConfig& c = config;
    const BlockWeights& host = *b.host;
    const KvLayerView view = kv_view(host.layer);
    const float* inv_freq = host.ratio == 0 ? window_inv_freq.data() : compressed_inv_freq.data();
    const float eps = static_cast<float>(c.rms_norm_eps);
    const int heads = static_cast<int>(c.num_attention_heads);
    const int d = static_cast<int>(c.head_dim);
    const int rd = static_cast<int>(c.qk_rope_head_dim);
    // Two lanes meet before attention, which reads all their outputs:
    //   side: compressor projections -> compressors (entries into the pages) ... indexer q
    //         prepare -> scores -> top-k (it waits for the main lane's indexer q projection);
    //   main: wq_a, wkv -> q_norm -> indexer wq_b -> wq_b -> q rope, kv norm/rope/quant.
    const Lane side = side_lane();
    (*handoff)(stream, side.stream);  // x_in is ready
    timer.mark("attention projections", side.stream);
    if (b.compressor) {
      project(side, b.compressor->wkv, x_in, rows, comp_kv.data());
      project(side, b.compressor->wgate, x_in, rows, comp_score.data());
    }
    if (b.index_wq_b) {
      project(side, *b.index_weights_proj, x_in, rows, index_w.data());
      project(side, b.index_compressor->wkv, x_in, rows, index_kv.data());
      project(side, b.index_compressor->wgate, x_in, rows, index_score.data());
    }
    if (b.compressor) {
      timer.mark("compressors", side.stream);
      const CompressorView* index_view = b.index_compressor ? &b.index_compressor->view : nullptr;
      run_compressors(view, batch, b.compressor->view, comp_kv.data(), comp_score.data(), index_view,
                      index_kv.data(), index_score.data(), inv_freq, eps, side.stream,
                      take_snapshots ? snapshots.data() : nullptr, static_cast<int64_t>(snapshot_floats),
                      static_cast<int64_t>(snapshot_offsets[static_cast<size_t>(host.layer)]));
    }

    timer.mark("attention projections", stream);
    const bool any_quantized = b.wq_a.quantize_activations || b.wkv.quantize_activations;
    const QuantizedInput xq_in =
        any_quantized ? quantize_input(x_in, rows, c.hidden_size, {&b.wq_a, &b.wkv}, input_codes) : QuantizedInput{};
    project(b.wq_a, x_in, rows, q_lora.data(), xq_in);
    project(b.wkv, x_in, rows, kv.data(), xq_in);  // before wq_b and indexer wq_b reuse xq
    // q_norm: straight to the codes that wq_b and the indexer's wq_b share where they can.
    const DeviceLinear* index_wq_b = b.index_wq_b ? &*b.index_wq_b : nullptr;
    QuantizedInput q_in;
    if (codes_for({&b.wq_b, index_wq_b}, rows, workspace)) {
      const bool fp32_too = !b.wq_b.quantize_activations || (index_wq_b && !index_wq_b->quantize_activations);
      q_in.codes = rms_norm_quantize_rows(q_lora.data(), rows, c.q_lora_rank, c.q_lora_rank, b.q_norm.data(), eps,
                                          q_codes.data(), fp32_too ? q_lora.data() : nullptr, stream);
    } else {
      rms_norm_rows(q_lora.data(), rows, c.q_lora_rank, c.q_lora_rank, b.q_norm.data(), eps, q_lora.data(), stream);
    }
    const int32_t* selection = nullptr;
    if (b.index_wq_b) {
      project(*b.index_wq_b, q_lora.data(), rows, index_q.data(), q_in);
      (*handoff)(stream, side.stream);  // index_q is ready
      const float weight_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.index_head_dim)) /
                                                    std::sqrt(static_cast<double>(c.index_n_heads)));
      indexer_q_prepare(index_q.data(), index_w.data(), rows, static_cast<int>(c.index_n_heads),
                        static_cast<int>(c.index_head_dim), rd, batch.row_pos, inv_freq, weight_scale, side.stream);
      const int64_t max_visible = position_cap / host.ratio;
      if (max_visible > 0) {
        const int64_t slice = score_slice(max_visible);
        for (int64_t begin = 0; begin < rows; begin += slice) {
          const int64_t count = std::min(slice, rows - begin);
          timer.mark("indexer scores", side.stream);
          indexer_scores(view, batch, begin, count, index_q.data(), index_w.data(), static_cast<int>(c.index_n_heads),
                         static_cast<int>(c.index_head_dim), scores.data(), max_visible, max_visible, side.stream,
                         index_pack.data());
          timer.mark("indexer top-k", side.stream);
          topk_rows(scores.data(), max_visible, batch.row_pos, begin, count, host.ratio, static_cast<int>(c.index_topk),
                    selected.data() + begin * c.index_topk, selected_counts.data() + begin, side.stream,
                    topk_split.data());
        }
      } else {
        LONGCTX_CUDA_CHECK(
            cudaMemsetAsync(selected_counts.data(), 0, static_cast<size_t>(rows) * sizeof(int32_t), side.stream));
      }
      selection = selected.data();
    }
    timer.mark("attention projections", stream);
    project(b.wq_b, q_lora.data(), rows, q.data(), q_in);
    q_norm_rope(q.data(), rows, heads, d, rd, batch.row_pos, inv_freq, eps, stream);
    kv_norm_rope_quant(kv.data(), rows, d, rd, b.kv_norm.data(), batch.row_pos, inv_freq, eps, view.kv_dtype, stream);
    (*handoff)(side.stream, stream);  // the pages' new entries and the selection are ready
    // The most keys any row sees: its window plus its compressed entries.
    const int64_t positions = position_cap;
    int64_t max_keys = std::min<int64_t>(c.sliding_window, positions);
    if (host.ratio > 0) {
      max_keys += b.index_wq_b ? std::min<int64_t>(c.index_topk, positions / host.ratio) : positions / host.ratio;
    }
    timer.mark("sparse attention", stream);
    // Fast mode on bf16/fp8 pages: bf16 tensor-core attention for every step, decode included (the
    // heads fill the tensor-core tiles even for one row: 3-13x the fp32 kernel at decode, 30-48x
    // at prefill); fp32 pages stay on the fp32 kernel.
    const auto attend = fast_mode() && sparse_attention_tc_supported(view) ? sparse_attention_tc : sparse_attention;
    attend(view, batch, q.data(), kv.data(), b.attn_sink.data(), selection, selected_counts.data(),
           static_cast<int>(c.index_topk), heads, static_cast<int>(c.sliding_window), max_keys, inv_freq,
           attended.data(), attention_workspace.data(), attention_workspace.size(), stream);
    write_window(view, batch, kv.data(), stream);
    timer.mark("attention output", stream);
    linear(b.wo_a.view, attended.data(), heads * d, rows, low_rank.data(), b.wo_a.view.out,
           b.wo_a.view.out / c.o_groups, workspace_for(b.wo_a, workspace, /*grouped_wo_a=*/true), stream);
    project(b.wo_b, low_rank.data(), rows, result);
  }

  void moe(const DeviceBlock& b, const float* x_in, float* result) {
    const ModelConfig& c = config;
    const int k = static_cast<int>(c.num_experts_per_tok);
    const int experts = static_cast<int>(c.n_routed_experts);
    const int64_t inter = c.moe_intermediate_size;
    const int64_t hidden = c.hidden_size;
    const float limit = static_cast<float>(c.swiglu_limit);
    // The shared expert runs on the side lane from the quantized input on, alongside the routing
    // and the routed experts on the main lane; they meet at the combine.
    timer.mark("moe routing", stream);
    const bool quantize = b.experts.w1.quantize_activations || (b.shared && b.shared->w1.quantize_activations);
    // One pass: the simulated copy for the routed experts and the shared expert's codes.
    const QuantizedInput xq_in =
        quantize ? quantize_input(x_in, rows, hidden, {b.shared ? &b.shared->w1 : nullptr, b.shared ? &b.shared->w3 : nullptr},
                                  input_codes, b.experts.w1.quantize_activations)
                 : QuantizedInput{};
    const Lane side = side_lane();
    const float* shared_result = nullptr;
    if (b.shared) {
      (*handoff)(stream, side.stream);  // x_in and its quantized forms are ready
      timer.mark("shared expert", side.stream);
      project(side, b.shared->w1, x_in, rows, shared_gate.data(), xq_in);
      project(side, b.shared->w3, x_in, rows, shared_up.data(), xq_in);
      if (codes_for({&b.shared->w2}, rows, side_workspace)) {  // the SwiGLU straight to w2's codes
        linear_fp8(b.shared->w2.view,
                   swiglu_quantize(shared_gate.data(), shared_up.data(), rows, inter, nullptr, limit, shared_codes.data(),
                                   side.stream),
                   shared_out.data(), hidden, side_workspace, side.stream);
      } else {
        swiglu(shared_gate.data(), shared_up.data(), rows, inter, nullptr, limit, shared_hidden.data(), side.stream);
        project(side, b.shared->w2, shared_hidden.data(), rows, shared_out.data());
      }
      shared_result = shared_out.data();
      timer.mark("moe routing", stream);
    }
    project(b.gate, x_in, rows, router_logits.data());
    const bool normalize = c.scoring_func != ScoringFunc::kSoftmax && c.norm_topk_prob;
    const int scoring = c.scoring_func == ScoringFunc::kSoftmax ? kScoreSoftmax
                        : c.scoring_func == ScoringFunc::kSigmoid ? kScoreSigmoid
                                                                  : kScoreSqrtSoftplus;
    moe_route(router_logits.data(), b.gate_bias.size() > 0 ? b.gate_bias.data() : nullptr,
              b.tid2eid.size() > 0 ? b.tid2eid.data() : nullptr, tokens, rows, experts, k, scoring, normalize,
              static_cast<float>(c.routed_scaling_factor), route_experts.data(), route_weights.data(), stream);
    moe_permute(route_experts.data(), route_weights.data(), rows, k, experts, expert_counts.data(),
                expert_offsets.data(), expert_fill.data(), slot_rows.data(), slot_weights.data(), entry_slot.data(),
                active_experts.data(), stream);
    const float* expert_in = b.experts.w1.quantize_activations ? xq_in.simulated : x_in;
    const int64_t slots = rows * k;
    timer.mark("routed experts", stream);
    // The tensor-core path takes e4m3 activations: only where the reference quantizes them.
    LinearWorkspace up_workspace = workspace, down_workspace = workspace;
    if (!b.experts.w1.quantize_activations) up_workspace.tensor_core_min_rows = 0;
    if (!b.experts.w2.quantize_activations) down_workspace.tensor_core_min_rows = 0;
    grouped_linear(b.experts.w1.view, experts, expert_offsets.data(), expert_counts.data(), slots, expert_in, hidden,
                   slot_rows.data(), expert_gate.data(), inter, up_workspace, stream, active_experts.data());
    grouped_linear(b.experts.w3.view, experts, expert_offsets.data(), expert_counts.data(), slots, expert_in, hidden,
                   slot_rows.data(), expert_up.data(), inter, up_workspace, stream, active_experts.data());
    swiglu(expert_gate.data(), expert_up.data(), slots, inter, slot_weights.data(), limit, expert_hidden.data(), stream);
    if (b.experts.w2.quantize_activations) {
      fp8_simulate_rows(expert_hidden.data(), slots, inter, inter, expert_hidden.data(), inter, stream);
    }
    grouped_linear(b.experts.w2.view, experts, expert_offsets.data(), expert_counts.data(), slots,
                   expert_hidden.data(), inter, nullptr, slot_out.data(), hidden, down_workspace, stream,
                   active_experts.data());
    timer.mark("moe routing", stream);
    if (b.shared) (*handoff)(side.stream, stream);  // the shared expert's output is ready
    moe_combine(slot_out.data(), entry_slot.data(), route_experts.data(), rows, k, hidden, shared_result, result, stream);
  }

  void run_block(const DeviceBlock& b) {
    const ModelConfig& c = config;
    const int hc = static_cast<int>(c.hc_mult);
    const int iterations = static_cast<int>(c.hc_sinkhorn_iters);
    const float hc_eps = static_cast<float>(c.hc_eps);
    const float eps = static_cast<float>(c.rms_norm_eps);
    timer.mark("hyper-connections", stream);
    hc_pre(b.hc_attn.view(), streams.data(), rows, hc, c.hidden_size, iterations, hc_eps, eps, b.attn_norm.data(),
           x.data(), post.data(), comb.data(), hc_workspace.data(), stream);
    attention(b, x.data(), out.data());
    timer.mark("hyper-connections", stream);
    hc_post(out.data(), post.data(), comb.data(), rows, hc, c.hidden_size, streams.data(), stream);
    hc_pre(b.hc_ffn.view(), streams.data(), rows, hc, c.hidden_size, iterations, hc_eps, eps, b.ffn_norm.data(),
           x.data(), post.data(), comb.data(), hc_workspace.data(), stream);
    moe(b, x.data(), out.data());
    timer.mark("hyper-connections", stream);
    hc_post(out.data(), post.data(), comb.data(), rows, hc, c.hidden_size, streams.data(), stream);
  }

  // The logits (and hidden streams) of the logit rows, left in device buffers.
  void compute_logits(const DeviceHc& head_hc, const DeviceBuffer<float>& head_norm, bool return_hidden) {
    const ModelConfig& c = config;
    if (logit_count == 0) return;
    timer.mark("head", stream);
    hc_head(head_hc.view(), streams.data(), logit_rows, logit_count, static_cast<int>(c.hc_mult), c.hidden_size,
            static_cast<float>(c.hc_eps), static_cast<float>(c.rms_norm_eps), head_norm.data(), head_in.data(),
            hc_workspace.data(), stream);
    project(head, head_in.data(), logit_count, logits.data());
    if (return_hidden) {
      gather_rows(streams.data(), logit_rows, logit_count, c.hc_mult * c.hidden_size, hidden_out.data(), stream);
    }
  }

  void download(ForwardOutput* output, bool return_hidden) {
    const ModelConfig& c = config;
    output->rows = logit_count;
    sampleable_rows = logit_count;
    output->logits.resize(logits_on_device ? 0 : static_cast<size_t>(logit_count * c.vocab_size));
    output->hidden.clear();
    if (logit_count > 0) {
      if (!logits_on_device) {
        LONGCTX_CUDA_CHECK(cudaMemcpyAsync(output->logits.data(), logits.data(),
                                           output->logits.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
      }
      if (return_hidden) {
        output->hidden.resize(static_cast<size_t>(logit_count * c.hc_mult * c.hidden_size));
        LONGCTX_CUDA_CHECK(cudaMemcpyAsync(output->hidden.data(), hidden_out.data(),
                                           output->hidden.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
      }
    }
    LONGCTX_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  // Everything of a main-model step after the inputs are on the device.
  void compute(bool return_hidden) {
    if (rows > 0) {
      timer.mark("embedding", stream);
      embedding(reinterpret_cast<const uint16_t*>(embed.data()), config.hidden_size, tokens, rows,
                static_cast<int>(config.hc_mult), streams.data(), stream);
      for (const DeviceBlock& b : blocks) run_block(b);
    }
    compute_logits(final_hc, norm, return_hidden);
  }

  // Decode steps: the first step of a shape runs eagerly, the second captures a graph, later
  // ones replay it (after prepare() uploaded the step's inputs to the same addresses).
  void compute_decode(bool return_hidden) {
    if (epoch != graphs_epoch) {
      drop_graphs();
      graphs_epoch = epoch;
    }
    const GraphKey key{rows, return_hidden, position_cap, epoch};
    auto found = graphs.find(key);
    if (found == graphs.end()) {
      if (seen_once.insert(key).second) {
        compute(return_hidden);
        return;
      }
      cudaGraph_t graph = nullptr;
      LONGCTX_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      try {
        compute(return_hidden);
      } catch (...) {
        cudaStreamEndCapture(stream, &graph);
        if (graph != nullptr) cudaGraphDestroy(graph);
        throw;
      }
      LONGCTX_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      LONGCTX_CUDA_CHECK(status);
      found = graphs.emplace(key, exec).first;
    }
    LONGCTX_CUDA_CHECK(cudaGraphLaunch(found->second, stream));
  }

  void forward(const ForwardBatch& fb, ForwardOutput* output) {
    std::vector<ChunkRef> chunks;
    std::set<const BlockTables*> seen;
    bool decode = !fb.chunks.empty();
    for (size_t i = 0; i < fb.chunks.size(); ++i) {
      const SequenceChunk& chunk = fb.chunks[i];
      validate_chunk(config, layout, chunk.tokens, chunk.start_pos, chunk.blocks, chunk.num_logits, i);
      if (!seen.insert(chunk.blocks).second) fail("chunk ", i, ": a sequence appears twice in one batch");
      chunks.push_back({chunk.tokens, chunk.start_pos, chunk.blocks, chunk.num_logits});
      decode = decode && chunk.tokens.size() == 1 && chunk.num_logits == 1;
    }
    prepare(chunks);
    take_snapshots = std::any_of(fb.chunks.begin(), fb.chunks.end(),
                                 [](const SequenceChunk& chunk) { return chunk.state_snapshots != nullptr; });
    if (take_snapshots) grow(snapshots, static_cast<size_t>(rows) * snapshot_floats);
    if (decode && use_graphs && !take_snapshots && !timer.enabled()) {
      compute_decode(fb.return_hidden);
    } else {
      compute(fb.return_hidden);
    }
    timer.finish_step(stream);
    if (take_snapshots) {
      size_t first_row = 0;
      for (const SequenceChunk& chunk : fb.chunks) {
        if (chunk.state_snapshots != nullptr) {
          LONGCTX_CUDA_CHECK(cudaMemcpyAsync(chunk.state_snapshots, snapshots.data() + first_row * snapshot_floats,
                                             chunk.tokens.size() * snapshot_floats * sizeof(float),
                                             cudaMemcpyDeviceToHost, stream));
        }
        first_row += chunk.tokens.size();
      }
      take_snapshots = false;
    }
    download(output, fb.return_hidden);
  }

  void restore_state(const BlockTables& tables, int64_t position, const float* snapshot) {
    const int64_t block = position / kKvBlockSize;
    if (position < 0 || block >= static_cast<int64_t>(tables.window.size()) ||
        tables.window[static_cast<size_t>(block)] == kNoPage) {
      fail("restore_state: no window page for position ", position);
    }
    const int64_t page = tables.window[static_cast<size_t>(block)];
    for (const LayerKvLayout& kv_layer : layout.layers) {
      if (kv_layer.state_floats == 0) continue;
      uint8_t* state = window_pages[static_cast<size_t>(kv_layer.layer)].data() +
                       static_cast<size_t>(page) * kv_layer.window_page_bytes + kv_layer.state_offset;
      LONGCTX_CUDA_CHECK(cudaMemcpyAsync(state, snapshot + snapshot_offsets[static_cast<size_t>(kv_layer.layer)],
                                         kv_layer.state_floats * sizeof(float), cudaMemcpyHostToDevice, stream));
    }
    // The host snapshot may be reused as soon as this returns.
    LONGCTX_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  void forward_mtp(std::span<const MtpChunk> mtp_chunks, int64_t mtp_index, ForwardOutput* output) {
    const ModelConfig& c = config;
    if (mtp_index < 0 || mtp_index >= static_cast<int64_t>(mtp.size())) {
      fail("MTP block ", mtp_index, " does not exist (the model has ", mtp.size(), ")");
    }
    const DeviceMtp& m = mtp[static_cast<size_t>(mtp_index)];
    const int64_t hidden = c.hidden_size;
    const int64_t hc = c.hc_mult;
    std::vector<ChunkRef> chunks;
    std::vector<float> hidden_host;
    for (size_t i = 0; i < mtp_chunks.size(); ++i) {
      const MtpChunk& chunk = mtp_chunks[i];
      validate_chunk(c, layout, chunk.next_tokens, chunk.start_pos, chunk.blocks, chunk.num_logits, i);
      const int64_t size = static_cast<int64_t>(chunk.next_tokens.size());
      if (static_cast<int64_t>(chunk.hidden.size()) != size * hc * hidden) {
        fail("MTP chunk ", i, ": hidden has ", chunk.hidden.size(), " values, expected ", size * hc * hidden);
      }
      chunks.push_back({chunk.next_tokens, chunk.start_pos, chunk.blocks, chunk.num_logits});
      hidden_host.insert(hidden_host.end(), chunk.hidden.begin(), chunk.hidden.end());
    }
    prepare(chunks);
    if (rows > 0) {
      const float eps = static_cast<float>(c.rms_norm_eps);
      // x_j = e_proj(RMSNorm_e(embed(next token))) + h_proj(RMSNorm_h(stream_j)).
      embedding(reinterpret_cast<const uint16_t*>(embed.data()), hidden, tokens, rows, 1, mtp_e.data(), stream);
      rms_norm_rows(mtp_e.data(), rows, hidden, hidden, m.enorm.data(), eps, mtp_e.data(), stream);
      LONGCTX_CUDA_CHECK(cudaMemcpyAsync(x.data(), hidden_host.data(), hidden_host.size() * sizeof(float),
                                         cudaMemcpyHostToDevice, stream));
      rms_norm_rows(x.data(), rows * hc, hidden, hidden, m.hnorm.data(), eps, x.data(), stream);
      project(m.e_proj, mtp_e.data(), rows, mtp_ep.data());
      project(m.h_proj, x.data(), rows * hc, streams.data());
      add_projected_streams(mtp_ep.data(), streams.data(), rows, static_cast<int>(hc), hidden, streams.data(), stream);
      run_block(m.block);
    }
    compute_logits(m.hc_head, m.norm, false);
    timer.finish_step(stream);
    download(output, false);
  }
};

CudaBackend::CudaBackend(const ModelWeights& weights, const KvLayout& layout, const KvPoolSizes& sizes,
                         const CudaOptions& options)
    : impl_(std::make_unique<Impl>(weights, layout, sizes, options, WeightSource{})) {}

CudaBackend::CudaBackend(const ModelWeights& skeleton, const KvLayout& layout, const KvPoolSizes& sizes,
                         DeviceRandomWeights random, const CudaOptions& options)
    : impl_(std::make_unique<Impl>(skeleton, layout, sizes, options, WeightSource{true, random.seed})) {}

void CudaBackend::fill_kv_random(uint64_t seed) { impl_->fill_kv_random(seed); }

void CudaBackend::set_stage_timing(bool on) { impl_->timer.enable(on); }

std::vector<CudaBackend::StageTime> CudaBackend::stage_times() const {
  std::vector<StageTime> times;
  for (const cuda::StageTimer::Total& t : impl_->timer.totals()) times.push_back({t.stage, t.milliseconds, t.calls});
  return times;
}

void CudaBackend::reset_stage_times() { impl_->timer.reset(); }

CudaBackend::KvAllocation CudaBackend::kv_allocation() const { return impl_->kv_allocation; }

CudaBackend::~CudaBackend() = default;

const KvLayout& CudaBackend::kv_layout() const { return impl_->layout; }

void CudaBackend::forward(const ForwardBatch& batch, ForwardOutput* output) { impl_->forward(batch, output); }

size_t CudaBackend::state_snapshot_floats() const { return impl_->snapshot_floats; }

void CudaBackend::restore_state(const BlockTables& blocks, int64_t position, const float* snapshot) {
  impl_->restore_state(blocks, position, snapshot);
}

void CudaBackend::keep_logits_on_device(bool on) { impl_->logits_on_device = on; }

void CudaBackend::sample(std::span<const SamplingRow> rows, SampleOutput* output) {
  for (const SamplingRow& row : rows) {
    if (row.row < 0 || row.row >= impl_->sampleable_rows) {
      fail("sample: logit row ", row.row, " of ", impl_->sampleable_rows);
    }
  }
  impl_->sampler.sample(impl_->logits.data(), impl_->config.vocab_size, rows, output, impl_->stream);
}

void CudaBackend::forward_mtp(std::span<const MtpChunk> chunks, int64_t mtp_index, ForwardOutput* output) {
  impl_->forward_mtp(chunks, mtp_index, output);
}

size_t CudaBackend::weight_bytes() const {
  size_t total = impl_->embed.bytes() + device_bytes(impl_->head);
  auto block_bytes = [](const DeviceBlock& b) {
    size_t t = device_bytes(b.wq_a) + device_bytes(b.wq_b) + device_bytes(b.wkv) + device_bytes(b.wo_a) +
               device_bytes(b.wo_b) + device_bytes(b.gate) + device_bytes(b.experts.w1) +
               device_bytes(b.experts.w2) + device_bytes(b.experts.w3);
    if (b.compressor) t += device_bytes(b.compressor->wkv) + device_bytes(b.compressor->wgate);
    if (b.index_wq_b) {
      t += device_bytes(*b.index_wq_b) + device_bytes(*b.index_weights_proj) +
           device_bytes(b.index_compressor->wkv) + device_bytes(b.index_compressor->wgate);
    }
    if (b.shared) t += device_bytes(b.shared->w1) + device_bytes(b.shared->w2) + device_bytes(b.shared->w3);
    return t;
  };
  for (const DeviceBlock& b : impl_->blocks) total += block_bytes(b);
  for (const DeviceMtp& m : impl_->mtp) total += block_bytes(m.block) + device_bytes(m.e_proj) + device_bytes(m.h_proj);
  return total;
}

size_t CudaBackend::kv_bytes() const {
  size_t total = 0;
  for (const auto& b : impl_->window_pages) total += b.bytes();
  for (const auto& b : impl_->compressed_pages) total += b.bytes();
  return total;
}

}  // namespace longctx

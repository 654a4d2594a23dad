// longctx bench e2e: the whole V4 forward on the CUDA backend at a given context. Weights come
// from a checkpoint (--model) or are made on the device in the released formats (--synthetic);
// the KV cache is filled by a chunked prefill (timed) or, with --random-kv, by random entries so
// that decode at a long context can be timed without the prefill. Prints prefill tokens/s, the
// decode step latency, the KV memory really allocated against the planner's figure, and the
// decode step against the time to read its bytes once at peak bandwidth.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "cuda/cuda_backend.h"
#include "cuda_bench.h"
#include "kv/kv_cache_manager.h"
#include "kv/memory_plan.h"
#include "longctx/error.h"
#include "model/model_weights.h"
#include "synthetic_model.h"

namespace longctx::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

size_t floats_bytes(const std::vector<float>& v) {
  return v.size() * sizeof(float);
}

size_t hc_bytes(const HyperConnectionWeights& hc) {
  return floats_bytes(hc.fn) + floats_bytes(hc.base) + floats_bytes(hc.scale);
}

// Bytes a main layer's decode step reads from its weights when `experts` routed experts are busy.
double layer_weight_bytes(const BlockWeights& b, double experts) {
  double total = static_cast<double>(hc_bytes(b.hc_attn) + hc_bytes(b.hc_ffn) +
                                     floats_bytes(b.attn_norm) + floats_bytes(b.ffn_norm));
  const AttentionWeights& a = b.attn;
  for (const LinearWeight* w : {&a.wq_a, &a.wq_b, &a.wkv, &a.wo_a, &a.wo_b})
    total += static_cast<double>(w->stored_bytes());
  total += static_cast<double>(floats_bytes(a.q_norm) + floats_bytes(a.kv_norm) +
                               floats_bytes(a.attn_sink));
  const auto compressor_bytes = [](const CompressorWeights& c) {
    return static_cast<double>(c.wkv.stored_bytes() + c.wgate.stored_bytes() + floats_bytes(c.ape) +
                               floats_bytes(c.norm));
  };
  if (a.compressor) total += compressor_bytes(*a.compressor);
  if (a.indexer) {
    total += static_cast<double>(a.indexer->wq_b.stored_bytes() +
                                 a.indexer->weights_proj.stored_bytes()) +
             compressor_bytes(a.indexer->compressor);
  }
  total += static_cast<double>(b.ffn.gate.stored_bytes() + floats_bytes(b.ffn.gate_bias));
  if (!b.ffn.experts.empty()) {
    const ExpertWeights& e = b.ffn.experts.front();
    total += experts *
             static_cast<double>(e.w1.stored_bytes() + e.w2.stored_bytes() + e.w3.stored_bytes());
  }
  if (b.ffn.shared) {
    total += static_cast<double>(b.ffn.shared->w1.stored_bytes() + b.ffn.shared->w2.stored_bytes() +
                                 b.ffn.shared->w3.stored_bytes());
  }
  return total;
}

double expert_bytes(const BlockWeights& b) {
  if (b.ffn.experts.empty()) return 0;
  const ExpertWeights& e = b.ffn.experts.front();
  return static_cast<double>(e.w1.stored_bytes() + e.w2.stored_bytes() + e.w3.stored_bytes());
}

struct DecodeBytes {
  double weights = 0;  // all weights the step reads (busy experts only)
  double experts = 0;  // of which routed + shared experts
  double kv = 0;       // KV bytes all sequences read
};

// The fewest bytes one decode step of `batch` sequences at position `pos` reads.
DecodeBytes decode_bytes(const ModelWeights& w, const KvLayout& layout, int64_t pos,
                         int64_t batch) {
  const ModelConfig& c = w.config;
  const double e = static_cast<double>(c.n_routed_experts),
               k = static_cast<double>(c.num_experts_per_tok);
  // Expected busy experts when each of `batch` tokens picks k of e uniformly.
  const double busy = e * (1.0 - std::pow(1.0 - k / e, static_cast<double>(batch)));
  DecodeBytes d;
  for (const BlockWeights& b : w.layers) {
    d.weights += layer_weight_bytes(b, busy);
    d.experts += busy * expert_bytes(b);
    if (b.ffn.shared) {
      d.experts +=
          static_cast<double>(b.ffn.shared->w1.stored_bytes() + b.ffn.shared->w2.stored_bytes() +
                              b.ffn.shared->w3.stored_bytes());
    }
  }
  d.weights +=
      static_cast<double>(w.head.stored_bytes() + hc_bytes(w.hc_head) + floats_bytes(w.norm)) +
      static_cast<double>(batch) * static_cast<double>(c.hidden_size) * 2.0;  // embedding rows
  for (const LayerKvLayout& l : layout.layers) {
    if (l.layer >= c.num_hidden_layers) continue;
    const double entry = static_cast<double>(l.kv_entry_bytes);
    double per_sequence = static_cast<double>(std::min<int64_t>(l.window_entries, pos + 1)) * entry;
    if (l.ratio > 0) {
      const double visible = static_cast<double>((pos + 1) / l.ratio);
      per_sequence +=
          2.0 * static_cast<double>(l.state_floats) * 4.0;  // compressor state in and out
      if (l.has_indexer) {
        per_sequence += visible * static_cast<double>(l.indexer_key_bytes) +
                        std::min(visible, static_cast<double>(c.index_topk)) * entry;
      } else {
        per_sequence += visible * entry;
      }
    }
    d.kv += static_cast<double>(batch) * per_sequence;
  }
  return d;
}

struct PrefillFlops {
  double linears = 0, attention = 0, indexer = 0;
  double total() const { return linears + attention + indexer; }
};

// FLOPs of prefilling `tokens` positions by formula: 2 per multiply-add of every linear a token
// goes through (its k routed experts, not all), QK and PV over each query's keys, and the
// indexer's scores over all visible entries of each ratio-4 layer.
PrefillFlops prefill_flops(const ModelWeights& w, int64_t tokens) {
  const ModelConfig& c = w.config;
  double per_token = 0;
  for (const BlockWeights& b : w.layers) {
    const AttentionWeights& a = b.attn;
    for (const LinearWeight* l : {&a.wq_a, &a.wq_b, &a.wkv, &a.wo_b, &b.ffn.gate}) {
      per_token += 2.0 * static_cast<double>(l->out * l->in);
    }
    per_token += 2.0 * static_cast<double>(a.wo_a.out * a.wo_a.in);
    if (a.compressor)
      per_token += 2.0 * 2.0 * static_cast<double>(a.compressor->wkv.out * a.compressor->wkv.in);
    if (a.indexer) {
      per_token += 2.0 * static_cast<double>(
                             a.indexer->wq_b.out * a.indexer->wq_b.in +
                             a.indexer->weights_proj.out * a.indexer->weights_proj.in +
                             2 * a.indexer->compressor.wkv.out * a.indexer->compressor.wkv.in);
    }
    const double expert = 2.0 * 3.0 * static_cast<double>(c.moe_intermediate_size * c.hidden_size);
    per_token += expert * static_cast<double>(c.num_experts_per_tok + c.n_shared_experts);
  }
  PrefillFlops f;
  const double n = static_cast<double>(tokens);
  f.linears =
      per_token * n + 2.0 * static_cast<double>(c.vocab_size * c.hidden_size);  // one logit row
  const double per_key = 4.0 * static_cast<double>(c.num_attention_heads * c.head_dim);
  const double per_entry = 2.0 * static_cast<double>(c.index_n_heads * c.index_head_dim);
  for (const BlockWeights& b : w.layers) {
    // Window keys: min(pos + 1, W) summed over positions.
    const double window = static_cast<double>(c.sliding_window);
    const double window_keys =
        n <= window ? n * (n + 1) / 2 : window * (window + 1) / 2 + (n - window) * window;
    double keys = window_keys;
    if (b.ratio > 0) {
      // Visible entries (pos + 1) / r summed over positions ~ n^2 / (2 r).
      const double visible_sum = n * n / (2.0 * b.ratio);
      if (b.attn.indexer) {
        const double topk = static_cast<double>(c.index_topk);
        const double full = topk * b.ratio;  // positions from which k entries are selected
        keys += n <= full ? visible_sum : full * full / (2.0 * b.ratio) + (n - full) * topk;
        f.indexer += per_entry * visible_sum;
      } else {
        keys += visible_sum;
      }
    }
    f.attention += per_key * keys;
  }
  return f;
}

// GPU time by forward stage, largest first, with each stage's share.
void print_stage_times(const char* what, CudaBackend& backend) {
  std::vector<CudaBackend::StageTime> times = backend.stage_times();
  backend.reset_stage_times();
  double total = 0;
  for (const auto& t : times)
    total += t.milliseconds;
  std::sort(times.begin(), times.end(),
            [](const auto& a, const auto& b) { return a.milliseconds > b.milliseconds; });
  std::printf("%s GPU time by stage (%.1f ms in all):\n", what, total);
  for (const auto& t : times) {
    std::printf("  %-24s %10.2f ms %5.1f%%  (%ld calls)\n", t.stage.c_str(), t.milliseconds,
                total > 0 ? 100.0 * t.milliseconds / total : 0.0, t.calls);
  }
}

void print_kv_check(const CudaBackend& backend, const ModelConfig& c, const KvCacheOptions& options,
                    const KvPoolSizes& sizes, int64_t context) {
  const MemoryPlan plan = plan_memory(c, options, context, 0);
  const CudaBackend::KvAllocation a = backend.kv_allocation();
  int64_t compressed_pages = 0;
  for (const int32_t p : sizes.compressed_pages)
    compressed_pages = std::max<int64_t>(compressed_pages, p);
  const double tokens_held = static_cast<double>(compressed_pages) * kKvBlockSize;
  const double allocated_per_token =
      tokens_held > 0 ? static_cast<double>(a.compressed_bytes) / tokens_held : 0.0;
  const double window_per_sequence = 2.0 * static_cast<double>(a.window_bytes) / sizes.window_pages;
  std::printf(
      "KV (%s entries, %s indexer keys): pools allocated %.3f GiB (window %.3f GiB in %d pages, "
      "compressed "
      "%.3f GiB in %lld pages per pool); device free memory dropped by %.3f GiB\n",
      to_string(options.kv_dtype), to_string(options.indexer_dtype),
      static_cast<double>(a.window_bytes + a.compressed_bytes) / kGiB,
      static_cast<double>(a.window_bytes) / kGiB, sizes.window_pages,
      static_cast<double>(a.compressed_bytes) / kGiB, static_cast<long long>(compressed_pages),
      static_cast<double>(a.device_bytes) / kGiB);
  const bool per_token_ok =
      std::abs(allocated_per_token - plan.bytes_per_token) <= 1e-9 * plan.bytes_per_token;
  const bool window_ok =
      std::abs(window_per_sequence - static_cast<double>(plan.window_bytes_per_sequence)) < 0.5;
  std::printf(
      "KV bytes per token: allocated %.4f, planner %.4f -> %s; window per sequence: allocated "
      "%.0f, "
      "planner %zu -> %s\n",
      allocated_per_token, plan.bytes_per_token, per_token_ok ? "equal" : "MISMATCH",
      window_per_sequence, plan.window_bytes_per_sequence, window_ok ? "equal" : "MISMATCH");
  std::printf(
      "KV of one %lld-token sequence: planner %.3f GiB; device memory per token held "
      "(cudaMemGetInfo) "
      "%.1f bytes\n",
      static_cast<long long>(context), plan.kv_bytes_per_sequence / kGiB,
      static_cast<double>(a.device_bytes) / (tokens_held > 0 ? tokens_held : 1.0));
}

}  // namespace

int run_e2e_bench(const E2eBenchOptions& o) {
  if (o.model_dir.empty() == o.synthetic.empty())
    fail("give exactly one of --model DIR and --synthetic flash|pro");
  if (o.batch < 1 || o.decode_steps < 0 || o.chunk < 1)
    fail("--batch and --chunk must be positive");
  const DevicePeaks peaks = query_device(o.device);
  std::printf("%s", describe(peaks).c_str());

  const auto load_start = Clock::now();
  std::unique_ptr<LoadedModel> loaded;
  ModelWeights synthetic;
  if (!o.model_dir.empty()) {
    loaded = std::make_unique<LoadedModel>(o.model_dir);
  } else {
    synthetic = synthetic_weights(synthetic_config(o.synthetic, o.layers, o.experts), o.seed);
  }
  const ModelWeights& weights = loaded ? loaded->weights() : synthetic;
  const ModelConfig& c = weights.config;
  // Decode steps end at position context - 1 (--stage-times adds one eager step at the end).
  const int64_t history = o.context - o.decode_steps - (o.stage_times ? 1 : 0);
  if (history < 1)
    fail("--context ", o.context, " leaves no room for ", o.decode_steps, " decode steps");
  if (o.context > c.max_position_embeddings) {
    fail("--context ", o.context, " exceeds max_position_embeddings ", c.max_position_embeddings);
  }
  int64_t compressed_layers = 0, indexer_layers = 0;
  for (const BlockWeights& b : weights.layers) {
    compressed_layers += b.ratio > 0;
    indexer_layers += b.attn.indexer.has_value();
  }
  std::printf(
      "model: %s; %lld layers (%lld compressed, %lld with the indexer) + %lld MTP, hidden %lld, "
      "%lld heads, "
      "%lld routed experts (top-%lld) + %lld shared, vocab %lld\n",
      loaded ? o.model_dir.c_str()
             : ("synthetic " + o.synthetic + ", weights made on the device").c_str(),
      static_cast<long long>(c.num_hidden_layers), static_cast<long long>(compressed_layers),
      static_cast<long long>(indexer_layers), static_cast<long long>(c.num_nextn_predict_layers),
      static_cast<long long>(c.hidden_size), static_cast<long long>(c.num_attention_heads),
      static_cast<long long>(c.n_routed_experts), static_cast<long long>(c.num_experts_per_tok),
      static_cast<long long>(c.n_shared_experts), static_cast<long long>(c.vocab_size));

  // Pools: every sequence holds its context's compressed blocks; the window pool holds two pages
  // per sequence plus the blocks one prefill chunk opens (earlier window pages are given back).
  const KvLayout layout = make_kv_layout(c, o.kv);
  const int64_t blocks = (o.context + kKvBlockSize - 1) / kKvBlockSize;
  KvPoolSizes sizes;
  sizes.window_pages =
      static_cast<int32_t>(2 * o.batch + (o.chunk + kKvBlockSize - 1) / kKvBlockSize + 2);
  sizes.compressed_pages.assign(layout.compressed_ratios.size(),
                                static_cast<int32_t>(blocks * o.batch));
  KvCacheManager kv(layout, sizes, /*enable_prefix_caching=*/false);
  CudaOptions cuda_options;
  cuda_options.device = o.device;
  cuda_options.batch_invariant = o.batch_invariant;
  std::unique_ptr<CudaBackend> backend =
      loaded ? std::make_unique<CudaBackend>(weights, layout, sizes, cuda_options)
             : std::make_unique<CudaBackend>(weights, layout, sizes,
                                             CudaBackend::DeviceRandomWeights{o.seed}, cuda_options);
  std::printf("weights on the device: %.2f GiB (planner %.2f GiB); load %.1f s\n",
              static_cast<double>(backend->weight_bytes()) / kGiB,
              static_cast<double>(weight_bytes_on_device(c)) / kGiB, seconds_since(load_start));
  print_kv_check(*backend, c, o.kv, sizes, o.context);

  std::mt19937 random(static_cast<uint32_t>(o.seed));
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.vocab_size) - 1);
  std::vector<KvCacheManager::SequenceId> ids;
  std::vector<int32_t> tokens(static_cast<size_t>(history));
  for (int64_t s = 0; s < o.batch; ++s)
    ids.push_back(kv.add_sequence());

  // Positions [0, first_prefilled) hold random entries; [first_prefilled, history) are prefilled.
  const int64_t prefilled = o.random_kv ? std::max<int64_t>(o.prefill_tokens, 0) : history;
  if (prefilled > history)
    fail("--prefill-tokens ", prefilled, " exceeds the ", history, " positions before decode");
  const int64_t first_prefilled = history - prefilled;
  for (int32_t& t : tokens)
    t = pick(random);
  if (first_prefilled > 0) {
    // Book those positions in the manager chunk by chunk (the window pool holds one chunk's
    // pages), then fill every page with random entries.
    for (const auto id : ids) {
      for (int64_t begin = 0; begin < first_prefilled; begin += o.chunk) {
        const int64_t size = std::min(o.chunk, first_prefilled - begin);
        if (!kv.reserve(id, begin + size))
          fail("KV pools too small for ", begin + size, " positions");
        kv.commit(id, std::span<const int32_t>(tokens.data() + begin, static_cast<size_t>(size)));
      }
    }
    const auto start = Clock::now();
    backend->fill_kv_random(o.seed);
    std::printf(
        "KV pages filled with random entries for %lld x %lld positions (no prefill) in %.2f s\n",
        static_cast<long long>(o.batch), static_cast<long long>(first_prefilled),
        seconds_since(start));
  }
  if (prefilled > 0) {
    backend->set_stage_timing(o.stage_times);
    double total = 0;
    const int64_t chunks = (prefilled + o.chunk - 1) / o.chunk;
    for (const auto id : ids) {
      for (int64_t i = 0, begin = first_prefilled; begin < history; ++i, begin += o.chunk) {
        const int64_t size = std::min(o.chunk, history - begin);
        if (!kv.reserve(id, begin + size))
          fail("KV pools too small for ", begin + size, " positions");
        const std::span<const int32_t> span(tokens.data() + begin, static_cast<size_t>(size));
        ForwardBatch fb;
        fb.chunks.push_back({span, begin, &kv.tables(id), 1});
        ForwardOutput out;
        const auto start = Clock::now();
        backend->forward(fb, &out);
        const double t = seconds_since(start);
        total += t;
        kv.commit(id, span);
        if (id == ids.front() && (chunks <= 16 || i % 8 == 0 || i + 1 == chunks)) {
          std::printf("  prefill chunk %lld: positions %lld..%lld in %.3f s (%.0f tokens/s)\n",
                      static_cast<long long>(i), static_cast<long long>(begin),
                      static_cast<long long>(begin + size - 1), t, static_cast<double>(size) / t);
          std::fflush(stdout);  // a run cut off by a time limit still shows how far it got
        }
      }
    }
    // FLOPs of positions [first_prefilled, history): the difference of the prefix totals.
    const PrefillFlops all = prefill_flops(weights, history),
                       before = prefill_flops(weights, first_prefilled);
    PrefillFlops f{all.linears - before.linears, all.attention - before.attention,
                   all.indexer - before.indexer};
    if (first_prefilled == 0) f = all;
    std::printf(
        "prefill: %lld sequence(s) x %lld tokens (positions %lld..%lld) in chunks of %lld: %.2f s, "
        "%.0f "
        "tokens/s; FLOPs by formula %.3g per sequence (linears %.3g, attention %.3g, indexer %.3g) "
        "-> %.1f "
        "TFLOP/s\n",
        static_cast<long long>(o.batch), static_cast<long long>(prefilled),
        static_cast<long long>(first_prefilled), static_cast<long long>(history - 1),
        static_cast<long long>(o.chunk), total, static_cast<double>(o.batch * prefilled) / total,
        f.total(), f.linears, f.attention, f.indexer,
        static_cast<double>(o.batch) * f.total() / total / 1e12);
    if (o.stage_times) print_stage_times("prefill", *backend);
    backend->set_stage_timing(false);
  }
  {
    const PrefillFlops f = prefill_flops(weights, 1048576);
    std::printf(
        "prefill FLOPs by formula for one 1048576-token sequence: %.3g (linears %.3g, attention "
        "%.3g, "
        "indexer %.3g)\n",
        f.total(), f.linears, f.attention, f.indexer);
  }

  // Decode: one token per sequence per step; the first step of a shape runs eagerly, the second
  // captures a CUDA graph, later ones replay it.
  std::vector<double> steps;
  std::vector<int32_t> next(static_cast<size_t>(o.batch));
  for (int64_t step = 0; step < o.decode_steps; ++step) {
    const int64_t position = history + step;
    ForwardBatch fb;
    for (int64_t s = 0; s < o.batch; ++s) {
      next[static_cast<size_t>(s)] = pick(random);
      if (!kv.reserve(ids[static_cast<size_t>(s)], position + 1))
        fail("KV pools too small for decode");
      fb.chunks.push_back({std::span<const int32_t>(&next[static_cast<size_t>(s)], 1), position,
                           &kv.tables(ids[static_cast<size_t>(s)]), 1});
    }
    ForwardOutput out;
    const auto start = Clock::now();
    backend->forward(fb, &out);
    steps.push_back(seconds_since(start));
    for (int64_t s = 0; s < o.batch; ++s) {
      kv.commit(ids[static_cast<size_t>(s)],
                std::span<const int32_t>(&next[static_cast<size_t>(s)], 1));
    }
    bool finite = true;
    for (const float v : out.logits)
      finite = finite && std::isfinite(v);
    if (!finite)
      std::printf("  warning: decode step %lld produced non-finite logits\n",
                  static_cast<long long>(step));
  }
  if (steps.size() >= 3) {
    std::vector<double> replayed(steps.begin() + 2, steps.end());
    std::sort(replayed.begin(), replayed.end());
    const double median = replayed[replayed.size() / 2];
    const DecodeBytes bytes = decode_bytes(weights, layout, o.context - 1, o.batch);
    const double floor = (bytes.weights + bytes.kv) / peaks.bandwidth;
    const double literal = (bytes.experts + bytes.kv) / peaks.bandwidth;
    std::printf(
        "decode: batch %lld at context %lld: median step %.2f ms (min %.2f; first step %.1f ms "
        "eager, "
        "second %.1f ms with graph capture), %.1f tokens/s\n",
        static_cast<long long>(o.batch), static_cast<long long>(o.context), median * 1e3,
        replayed.front() * 1e3, steps[0] * 1e3, steps[1] * 1e3,
        static_cast<double>(o.batch) / median);
    std::printf(
        "decode bytes per step: weights %.2f GiB (experts %.2f GiB, expected busy), KV %.3f GiB -> "
        "%.2f ms at "
        "%.2f TB/s; measured / floor = %.2fx (target <= 1.5x); experts + KV alone: %.2f ms, "
        "%.2fx\n",
        bytes.weights / kGiB, bytes.experts / kGiB, bytes.kv / kGiB, floor * 1e3,
        peaks.bandwidth / 1e12, median / floor, literal * 1e3, median / literal);
    if (o.stage_times) {
      // One more step, eager and timed by stage (graphs are off while stages are timed).
      const int64_t position = history + o.decode_steps;
      ForwardBatch fb;
      for (int64_t s = 0; s < o.batch; ++s) {
        if (!kv.reserve(ids[static_cast<size_t>(s)], position + 1))
          fail("KV pools too small for decode");
        fb.chunks.push_back({std::span<const int32_t>(&next[static_cast<size_t>(s)], 1), position,
                             &kv.tables(ids[static_cast<size_t>(s)]), 1});
      }
      ForwardOutput out;
      backend->set_stage_timing(true);
      backend->forward(fb, &out);
      print_stage_times("decode step (eager)", *backend);
      backend->set_stage_timing(false);
    }
  } else if (!steps.empty()) {
    std::printf(
        "decode: %zu step(s), first %.2f ms (ask for >= 3 steps for a median of graph replays)\n",
        steps.size(), steps[0] * 1e3);
  }
  return 0;
}

}  // namespace longctx::bench

// Sampling on the GPU, bit-exact with the engine's sample_token (src/engine/sampler.cpp).
//
// Data layout: the logits are fp32 rows [*, vocab] in device memory (the backend's `logits`);
// each draw names its row. Per group of at most kGroupRows draws the scratch holds, per draw, a
// row of `vocab` doubles twice (a, b) and of `vocab` int32 ids twice (ids_a, ids_b):
//   prepare: b <- scores (double logits, penalties, banned ids, / temperature)
//            a, ids_a <- the head of the row, in id order: every score within 40 of the top one
//   sort:    b, ids_b <- the head sorted by score, descending, stable (CUB segmented radix sort)
//   draw:    a <- exp(score - top), then the prefix sums of the probabilities; the token
//
// Why the result is the CPU's, bit for bit:
//  - scores, penalties and temperature: the same double operations per element, each rounded
//    once (no fused multiply-adds); the exponential and the random draw are the shared
//    sampling_exp and sampling_uniform (backend/sampling.h).
//  - order: a stable descending sort of the head in id order puts ties at the lower id, as the
//    CPU's stable_sort of all ids does; the head is a prefix of the CPU's order.
//  - the sums that depend on order (`total` over the kept entries, the running mass of top-p,
//    `kept_mass`, the cumulative sum of the draw) run on one thread in sorted order. The draw's
//    cumulative sum and kept_mass are prefixes of the same sequence as top-p's mass, so one pass
//    gives all three. A term is dropped only when it and every later term cannot change the sum:
//    total >= 1 (the top term is exp(0) = 1) and a term below total * 2^-57, with every later
//    term at most twice as large, is under half an ulp of the sum (round-to-nearest leaves the
//    sum as it is). Terms past the head are below exp(-40) < 2^-57. The same bound holds for the
//    normalised sums, whose partial sum is ~1 by then; and the draw always lands before such a
//    term, because the cumulative sum reaches kept_mass there and draw < kept_mass.
//  - the parts that do not depend on order run in parallel: elementwise operations, maxima,
//    the first index that passes a test (min-p's cut, the draw's position).
// Greedy rows (temperature 0) take the first maximal score, as std::max_element does.
#include "cuda/sampling.h"

#include <cub/device/device_segmented_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "cuda/cuda_check.h"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kTile = 4096;  // doubles staged in shared memory for the sequential sums
constexpr int kGroupRows = 32;  // draws per pass: bounds the scratch at 32 x vocab x 24 bytes
// Scores further than this below the top one give exp() < 2^-57: they cannot change any sum.
constexpr double kHeadRange = 40.0;

// A SamplingRow as the kernels read it.
struct RowParams {
  double temperature, top_p, min_p, repetition, presence, frequency;
  uint64_t seed;
  int64_t stream, position, top_k, logit_row;
  int32_t penalty_begin, penalty_count, banned_begin, banned_count;
};

__device__ inline double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ inline int64_t lmin(int64_t a, int64_t b) { return a < b ? a : b; }

// The first maximum: larger value, then lower index.
__device__ inline void better(double& value, int& index, double other_value, int other_index) {
  if (other_value > value || (other_value == value && other_index < index)) {
    value = other_value;
    index = other_index;
  }
}

__device__ void block_argmax(double& value, int& index) {
  __shared__ double values[kThreads / 32];
  __shared__ int indices[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    better(value, index, __shfl_xor_sync(0xffffffffu, value, offset), __shfl_xor_sync(0xffffffffu, index, offset));
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) {
    values[warp] = value;
    indices[warp] = index;
  }
  __syncthreads();
  value = values[0];
  index = indices[0];
  for (int w = 1; w < kThreads / 32; ++w) better(value, index, values[w], indices[w]);
}

__device__ int block_min(int value) {
  __shared__ int mins[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) value = min(value, __shfl_xor_sync(0xffffffffu, value, offset));
  __syncthreads();
  if (threadIdx.x % 32 == 0) mins[threadIdx.x / 32] = value;
  __syncthreads();
  value = mins[0];
  for (int w = 1; w < kThreads / 32; ++w) value = min(value, mins[w]);
  return value;
}

// One block per draw: scores, then the token (greedy) or the head of the row (sampled).
__global__ void __launch_bounds__(kThreads) prepare_kernel(const float* logits, int64_t vocab, const RowParams* rows,
                                                           const PenaltyEntry* penalties, const int32_t* banned,
                                                           double* head_scores, int32_t* head_ids, double* scores,
                                                           int* segment_begin, int* segment_end, int32_t* tokens) {
  using namespace sampling_detail;
  const RowParams p = rows[blockIdx.x];
  const float* x = logits + p.logit_row * vocab;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * vocab;
  double* s = scores + base;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) s[i] = x[i];
  __syncthreads();
  // Each penalised token once, the CPU's operations in its order.
  for (int e = threadIdx.x; e < p.penalty_count; e += kThreads) {
    const PenaltyEntry entry = penalties[p.penalty_begin + e];
    double v = s[entry.token];
    if (p.repetition != 1.0) v = v > 0 ? div_rn(v, p.repetition) : mul(v, p.repetition);
    if (entry.output_count > 0) v = sub(v, add(mul(p.frequency, static_cast<double>(entry.output_count)), p.presence));
    s[entry.token] = v;
  }
  __syncthreads();
  for (int b = threadIdx.x; b < p.banned_count; b += kThreads) s[banned[p.banned_begin + b]] = -HUGE_VAL;
  __syncthreads();
  if (threadIdx.x == 0) segment_begin[blockIdx.x] = segment_end[blockIdx.x] = static_cast<int>(base);

  if (p.temperature == 0.0) {
    double best = -HUGE_VAL;
    int index = INT_MAX;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) better(best, index, s[i], static_cast<int>(i));
    block_argmax(best, index);
    if (threadIdx.x == 0) tokens[blockIdx.x] = index == INT_MAX ? 0 : index;
    return;
  }
  double best = -HUGE_VAL;
  int index = INT_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const double v = div_rn(s[i], p.temperature);
    s[i] = v;
    better(best, index, v, static_cast<int>(i));
  }
  block_argmax(best, index);
  const double top = best;
  // The head, compacted in id order (the stable sort then breaks ties by id).
  __shared__ int warp_counts[kThreads / 32];
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t tile = 0; tile < vocab; tile += kThreads) {
    const int64_t i = tile + threadIdx.x;
    double v = 0;
    bool in_head = false;
    if (i < vocab) {
      v = s[i];
      in_head = sub(v, top) >= -kHeadRange;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, in_head);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int offset = count;
    for (int w = 0; w < warp; ++w) offset += warp_counts[w];
    offset += __popc(ballot & ((1u << lane) - 1u));
    if (in_head) {
      head_scores[base + offset] = v == 0.0 ? 0.0 : v;  // -0 sorts with +0, as the CPU compares
      head_ids[base + offset] = static_cast<int32_t>(i);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int total = 0;
      for (int w = 0; w < kThreads / 32; ++w) total += warp_counts[w];
      count += total;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) segment_end[blockIdx.x] = static_cast<int>(base) + count;
}

// One block per sampled draw, over its sorted head: the CPU's sums and cuts, then the token.
__global__ void __launch_bounds__(kThreads) draw_kernel(int64_t vocab, const RowParams* rows, const double* sorted_scores,
                                                        const int32_t* sorted_ids, const int* segment_end,
                                                        double* work, int32_t* tokens) {
  using namespace sampling_detail;
  const RowParams p = rows[blockIdx.x];
  if (p.temperature == 0.0) return;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * vocab;
  const double* s = sorted_scores + base;
  const int32_t* ids = sorted_ids + base;
  double* w = work + base;
  const int64_t head = segment_end[blockIdx.x] - base;
  const int64_t keep = p.top_k > 0 ? lmin(vocab, p.top_k) : vocab;
  const int64_t length = lmin(keep, head);
  if (length == 0) {  // every score NaN or -inf: nothing sensible to draw
    if (threadIdx.x == 0) tokens[blockIdx.x] = 0;
    return;
  }
  const double top = s[0];
  __shared__ double tile[kTile];
  __shared__ double shared_total, shared_mass;
  __shared__ int64_t shared_end, shared_cut;

  // total = sum of exp(s - top) over the kept entries, in order. Thread 0 adds eight staged
  // terms per step (the loads run ahead of the dependent adds); the no-op test runs once per
  // tile, on its last term: terms added after the first no-op one are no-ops too.
  if (threadIdx.x == 0) shared_end = length;
  for (int64_t start = 0; start < length; start += kTile) {
    const int n = static_cast<int>(lmin(kTile, length - start));
    const int padded = (n + 7) & ~7;
    for (int j = threadIdx.x; j < padded; j += kThreads) {
      double e = 0.0;  // adding +0 leaves a sum as it is
      if (j < n) {
        e = sampling_exp(sub(s[start + j], top));
        w[start + j] = e;
      }
      tile[j] = e;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = start == 0 ? 0.0 : shared_total;
      for (int c = 0; c < padded; c += 8) {
        double x[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) x[k] = tile[c + k];
#pragma unroll
        for (int k = 0; k < 8; ++k) total = add(total, x[k]);
      }
      if (tile[n - 1] < mul(total, 0x1p-57)) shared_end = start + n;
      shared_total = total;
    }
    __syncthreads();
    if (shared_end < length) break;
  }
  const double total = shared_total;
  const int64_t end = shared_end;  // later terms change no sum

  // min-p: the first entry below min_p times the top probability.
  int64_t stop = end;
  if (p.min_p > 0.0) {
    const double floor_p = mul(p.min_p, div_rn(w[0], total));
    int first = INT_MAX;
    for (int64_t i = 1 + threadIdx.x; i < end; i += kThreads) {
      if (div_rn(w[i], total) < floor_p) {
        first = static_cast<int>(i);
        break;
      }
    }
    stop = lmin(stop, block_min(first));
  }

  // The running mass of the probabilities, in order, until top-p is reached; w <- the prefix
  // sums. The mass never decreases, so the top-p test runs once per eight terms and, when it
  // passes, finds the first of them that reached top_p.
  if (threadIdx.x == 0) shared_cut = -1;
  for (int64_t start = 0; start < stop; start += kTile) {
    const int n = static_cast<int>(lmin(kTile, stop - start));
    const int padded = (n + 7) & ~7;
    for (int j = threadIdx.x; j < padded; j += kThreads) tile[j] = j < n ? div_rn(w[start + j], total) : 0.0;
    __syncthreads();
    if (threadIdx.x == 0) {
      double mass = start == 0 ? 0.0 : shared_mass;
      const bool top_p = p.top_p < 1.0;
      for (int c = 0; c < padded; c += 8) {
        double x[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) x[k] = tile[c + k];
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          mass = add(mass, x[k]);
          x[k] = mass;
        }
#pragma unroll
        for (int k = 0; k < 8; ++k) tile[c + k] = x[k];
        if (top_p && mass >= p.top_p) {
          // The first crossing (a real term: padding adds nothing), unrolled so that x stays in
          // registers.
          int first_k = 7;
#pragma unroll
          for (int k = 7; k >= 0; --k) {
            if (x[k] >= p.top_p) {
              first_k = k;
              mass = x[k];
            }
          }
          shared_cut = start + c + first_k + 1;
          break;
        }
      }
      shared_mass = mass;
    }
    __syncthreads();
    const int64_t cut = shared_cut;
    const int written = cut >= 0 ? static_cast<int>(cut - start) : n;
    for (int j = threadIdx.x; j < written; j += kThreads) w[start + j] = tile[j];
    __syncthreads();
    if (cut >= 0) break;
  }
  const int64_t kept = shared_cut >= 0 ? shared_cut : stop;
  const double kept_mass = shared_mass;
  const double draw = mul(sampling_uniform(p.seed, p.stream, p.position), kept_mass);
  int first = INT_MAX;
  for (int64_t i = threadIdx.x; i < kept; i += kThreads) {
    if (draw < w[i]) {
      first = static_cast<int>(i);
      break;
    }
  }
  first = block_min(first);
  if (threadIdx.x == 0) tokens[blockIdx.x] = ids[first == INT_MAX ? kept - 1 : first];
}

}  // namespace

struct DeviceSampler::Impl {
  DeviceBuffer<double> scores_a, scores_b;
  DeviceBuffer<int32_t> ids_a, ids_b;
  DeviceBuffer<int> segment_begin, segment_end;
  DeviceBuffer<int32_t> tokens;
  DeviceBuffer<uint8_t> inputs, sort_scratch;
  size_t rows_vocab = 0;
  std::vector<uint8_t> inputs_host;
};

DeviceSampler::DeviceSampler() : impl_(std::make_unique<Impl>()) {}
DeviceSampler::~DeviceSampler() = default;

void DeviceSampler::sample(const float* logits, int64_t vocab, std::span<const SamplingRow> rows,
                           SampleOutput* output, cudaStream_t stream) {
  Impl& m = *impl_;
  output->tokens.assign(rows.size(), 0);
  output->logits.clear();
  if (vocab <= 0 || vocab > INT32_MAX / kGroupRows) fail("device sampler: vocabulary of ", vocab, " tokens");
  const size_t group_elements = static_cast<size_t>(kGroupRows) * static_cast<size_t>(vocab);
  if (m.rows_vocab != group_elements) {
    m.scores_a.resize(group_elements);
    m.scores_b.resize(group_elements);
    m.ids_a.resize(group_elements);
    m.ids_b.resize(group_elements);
    m.segment_begin.resize(kGroupRows);
    m.segment_end.resize(kGroupRows);
    m.tokens.resize(kGroupRows);
    size_t bytes = 0;
    LONGCTX_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        nullptr, bytes, m.scores_a.data(), m.scores_b.data(), m.ids_a.data(), m.ids_b.data(),
        static_cast<int>(group_elements), kGroupRows, m.segment_begin.data(), m.segment_end.data(), 0,
        static_cast<int>(8 * sizeof(double)), stream));
    m.sort_scratch.resize(std::max<size_t>(bytes, 1));
    m.rows_vocab = group_elements;
  }
  for (size_t first = 0; first < rows.size(); first += kGroupRows) {
    const size_t count = std::min<size_t>(kGroupRows, rows.size() - first);
    std::vector<RowParams> params(count);
    std::vector<PenaltyEntry> penalties;
    std::vector<int32_t> banned;
    bool any_sampled = false;
    for (size_t k = 0; k < count; ++k) {
      const SamplingRow& r = rows[first + k];
      if (r.temperature < 0) fail("device sampler: negative temperature");
      for (const PenaltyEntry& e : r.penalties) {
        if (e.token < 0 || e.token >= vocab) fail("device sampler: penalised token ", e.token, " out of range");
      }
      for (const int32_t b : r.banned) {
        if (b < 0 || b >= vocab) fail("device sampler: banned token ", b, " out of range");
      }
      params[k] = {r.temperature, r.top_p, r.min_p, r.repetition_penalty, r.presence_penalty, r.frequency_penalty,
                   r.seed, r.stream, r.position, r.top_k, r.row,
                   static_cast<int32_t>(penalties.size()), static_cast<int32_t>(r.penalties.size()),
                   static_cast<int32_t>(banned.size()), static_cast<int32_t>(r.banned.size())};
      penalties.insert(penalties.end(), r.penalties.begin(), r.penalties.end());
      banned.insert(banned.end(), r.banned.begin(), r.banned.end());
      any_sampled = any_sampled || r.temperature != 0.0;
    }
    // One upload: the parameters, the penalty entries, the banned ids (each 16-byte aligned).
    auto align = [](size_t bytes) { return (bytes + 15) & ~size_t{15}; };
    const size_t params_bytes = align(count * sizeof(RowParams));
    const size_t penalty_bytes = align(penalties.size() * sizeof(PenaltyEntry));
    const size_t total_bytes = params_bytes + penalty_bytes + align(banned.size() * sizeof(int32_t));
    m.inputs_host.assign(total_bytes, 0);
    std::memcpy(m.inputs_host.data(), params.data(), count * sizeof(RowParams));
    if (!penalties.empty()) {
      std::memcpy(m.inputs_host.data() + params_bytes, penalties.data(), penalties.size() * sizeof(PenaltyEntry));
    }
    if (!banned.empty()) {
      std::memcpy(m.inputs_host.data() + params_bytes + penalty_bytes, banned.data(), banned.size() * sizeof(int32_t));
    }
    m.inputs.reserve(total_bytes);
    LONGCTX_CUDA_CHECK(
        cudaMemcpyAsync(m.inputs.data(), m.inputs_host.data(), total_bytes, cudaMemcpyHostToDevice, stream));
    const auto* d_params = reinterpret_cast<const RowParams*>(m.inputs.data());
    const auto* d_penalties = reinterpret_cast<const PenaltyEntry*>(m.inputs.data() + params_bytes);
    const auto* d_banned = reinterpret_cast<const int32_t*>(m.inputs.data() + params_bytes + penalty_bytes);
    const int blocks = static_cast<int>(count);
    prepare_kernel<<<blocks, kThreads, 0, stream>>>(logits, vocab, d_params, d_penalties, d_banned, m.scores_a.data(),
                                                    m.ids_a.data(), m.scores_b.data(), m.segment_begin.data(),
                                                    m.segment_end.data(), m.tokens.data());
    LONGCTX_CUDA_CHECK_LAUNCH();
    if (any_sampled) {
      size_t bytes = m.sort_scratch.size();
      LONGCTX_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
          m.sort_scratch.data(), bytes, m.scores_a.data(), m.scores_b.data(), m.ids_a.data(), m.ids_b.data(),
          static_cast<int>(count * static_cast<size_t>(vocab)), blocks, m.segment_begin.data(), m.segment_end.data(), 0,
          static_cast<int>(8 * sizeof(double)), stream));
      draw_kernel<<<blocks, kThreads, 0, stream>>>(vocab, d_params, m.scores_b.data(), m.ids_b.data(),
                                                   m.segment_end.data(), m.scores_a.data(), m.tokens.data());
      LONGCTX_CUDA_CHECK_LAUNCH();
    }
    LONGCTX_CUDA_CHECK(cudaMemcpyAsync(output->tokens.data() + first, m.tokens.data(), count * sizeof(int32_t),
                                       cudaMemcpyDeviceToHost, stream));
    // The inputs are re-staged by the next group.
    LONGCTX_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  size_t with_logits = 0;
  for (const SamplingRow& r : rows) with_logits += r.return_logits ? 1 : 0;
  if (with_logits > 0) {
    output->logits.resize(with_logits * static_cast<size_t>(vocab));
    size_t k = 0;
    for (const SamplingRow& r : rows) {
      if (!r.return_logits) continue;
      LONGCTX_CUDA_CHECK(cudaMemcpyAsync(output->logits.data() + k++ * static_cast<size_t>(vocab),
                                         logits + r.row * vocab, static_cast<size_t>(vocab) * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream));
    }
    LONGCTX_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
}

}  // namespace longctx::cuda

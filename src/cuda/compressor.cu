// The KV compressors of one layer (ratio 4 overlapping, ratio 128 plain), state in the paged
// cache.
//
// Layout: projections kv/score fp32 [rows, width] with width = (overlap ? 2 : 1) * channels; ape
// fp32 [ratio, width]; the streaming-softmax state lives after the window ring of the window page
// of the block holding the position (kv_layout.h): per accumulator [max | sum | weighted] x
// channels, main compressor (cur, next when overlapping) then the indexer's (cur, next).
// Completed entries are RMS-normed, roped at entry * ratio, then fp8-simulated (main, non-rope
// dims, blocks of 64) or Hadamard-rotated and fp4-simulated (indexer keys, blocks of 32), and
// encoded into the compressed page (main entry or indexer key).
//
// Streaming walk: one block per (chunk, compressor); thread t owns channels t, t + 256, ...: it
// alone reads and writes their accumulators, so positions run sequentially with no barrier
// except when an entry completes. Same operation order as src/cpu/cpu_compressor.cpp.
//
// Prefill chunks (no snapshots) split the walk: every entry whose positions all lie in the chunk
// (ratio r plain: [r e, r e + r); overlapping: first halves of [r (e - 1), r e) then second halves
// of [r e, r e + r), entry 0 only the latter) is pooled from an empty accumulator by its own
// block, with the walk's operations in the walk's order, so its bits are the walk's: every
// completion empties the accumulator the next entry starts from (this relies on the saved state
// at an entry boundary being such a completion's, as the walk always leaves it). Only the head
// (entries that began before the chunk) and the tail (positions after the last completed entry)
// stream, and the streaming block writes each block's state as the walk would have left it.
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxChannels = 1024;

__device__ __forceinline__ float mul_add(float a, float b, float c) { return __fadd_rn(__fmul_rn(a, b), c); }

// One position of the streaming softmax pooling of one channel; the only place these
// operations are written, so the streaming walk and the independent entries agree bitwise.
__device__ __forceinline__ void pool_add(float& max, float& sum, float& weighted, float value, float logit) {
  if (logit > max) {
    const float rescale = expf(max - logit);
    sum = mul_add(sum, rescale, 1.0f);
    weighted = mul_add(weighted, rescale, value);
    max = logit;
  } else {
    const float weight = expf(logit - max);
    sum = sum + weight;
    weighted = mul_add(weight, value, weighted);
  }
}

// The accumulators of one compressor in the state: [max | sum | weighted] x channels.
struct Accumulator {
  float* data;
  int channels;
  __device__ void reset(int c) const {
    data[c] = -INFINITY;
    data[channels + c] = 0.0f;
    data[2 * channels + c] = 0.0f;
  }
  __device__ void add(int c, float value, float logit) const {
    pool_add(data[c], data[channels + c], data[2 * channels + c], value, logit);
  }
  __device__ float result(int c) const { return data[2 * channels + c] / data[channels + c]; }
  __device__ void copy_from(int c, const Accumulator& other) const {
    data[c] = other.data[c];
    data[channels + c] = other.data[channels + c];
    data[2 * channels + c] = other.data[2 * channels + c];
  }
};

// One channel's accumulator in registers, starting empty (as Accumulator::reset leaves it).
struct RegisterAccumulator {
  float max = -INFINITY;
  float sum = 0.0f;
  float weighted = 0.0f;
  __device__ void add(float value, float logit) { pool_add(max, sum, weighted, value, logit); }
  __device__ float result() const { return weighted / sum; }
  __device__ void store(const Accumulator& to, int c) const {
    to.data[c] = max;
    to.data[to.channels + c] = sum;
    to.data[2 * to.channels + c] = weighted;
  }
};

// Finishes the pooled vector v [channels] of entry `entry` and stores it.
__device__ void finish_entry(const KvLayerView& kv, const BatchView& batch, const ChunkInfo& chunk,
                             bool is_index, int channels, const float* norm, int64_t entry, int ratio,
                             const float* inv_freq, float eps, float* v, float* scratch) {
  float square = 0.0f;
  for (int c = threadIdx.x; c < channels; c += blockDim.x) square = fmaf(v[c], v[c], square);
  const float inverse = 1.0f / sqrtf(block_sum(square, scratch) / static_cast<float>(channels) + eps);
  for (int c = threadIdx.x; c < channels; c += blockDim.x) v[c] = norm[c] * (v[c] * inverse);
  __syncthreads();
  float* rope = v + channels - kv.rope_dim;
  const int32_t position = static_cast<int32_t>(entry * ratio);
  for (int i = threadIdx.x; i < kv.rope_dim / 2; i += blockDim.x) {
    rope_pair(&rope[2 * i], &rope[2 * i + 1], position, inv_freq[i], false);
  }
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (!is_index) {
    const int nope = channels - kv.rope_dim;
    for (int block = warp; block < nope / 64; block += blockDim.x >> 5) {
      const float x0 = v[block * 64 + lane];
      const float x1 = v[block * 64 + 32 + lane];
      const float scale = fp8_scale_from_amax(warp_max(fmaxf(fabsf(x0), fabsf(x1))));
      v[block * 64 + lane] = fp8_simulate(x0, scale);
      v[block * 64 + 32 + lane] = fp8_simulate(x1, scale);
    }
    __syncthreads();
    if (warp == 0) warp_encode_kv(v, compressed_entry(kv, batch, chunk, entry), kv.kv_dtype, channels, kv.rope_dim);
  } else {
    hadamard(v, channels);
    for (int block = warp; block < channels / 32; block += blockDim.x >> 5) {
      const float x = v[block * 32 + lane];
      const float scale = fp4_scale_from_amax(warp_max(fabsf(x)));
      v[block * 32 + lane] = fp4_simulate(x, scale);
    }
    __syncthreads();
    if (warp == 0) warp_encode_key(v, indexer_key(kv, batch, chunk, entry), kv.key_dtype, channels);
  }
  __syncthreads();
}

// The streaming walk over positions [from, to) of the chunk (state in the window pages).
__device__ void walk_positions(const KvLayerView& kv, const BatchView& batch, const ChunkInfo& chunk,
                               bool is_index, const CompressorView& w, const float* proj, const float* score,
                               int64_t base, int32_t from, int32_t to, const float* inv_freq, float eps,
                               float* v, float* scratch, float* snapshots, int64_t snapshot_stride,
                               int64_t snapshot_offset) {
  const int channels = w.channels;
  const int width = (w.overlap ? 2 : 1) * channels;
  const int64_t next_offset = w.overlap ? 3 * channels : 0;
  for (int32_t pos = from; pos < to; ++pos) {
    const int64_t row = chunk.first_row + (pos - chunk.start_pos);
    float* state = window_state(kv, batch, chunk, pos) + base;
    const Accumulator cur{state, channels};
    const Accumulator next{state + next_offset, channels};
    if (pos % kBlockPositions == 0) {
      // A new block: empty accumulators, or the previous block's state carried over.
      if (pos == 0) {
        for (int c = threadIdx.x; c < channels; c += blockDim.x) {
          cur.reset(c);
          next.reset(c);
        }
      } else {
        float* previous = window_state(kv, batch, chunk, pos - 1) + base;
        const Accumulator previous_cur{previous, channels};
        const Accumulator previous_next{previous + next_offset, channels};
        for (int c = threadIdx.x; c < channels; c += blockDim.x) {
          cur.copy_from(c, previous_cur);
          if (w.overlap) next.copy_from(c, previous_next);
        }
      }
    }
    const float* p = proj + row * width;
    const float* s = score + row * width;
    const float* ape = w.ape + static_cast<int64_t>(pos % w.ratio) * width;
    for (int c = threadIdx.x; c < channels; c += blockDim.x) {
      if (w.overlap) {
        // Second channel half -> this entry; first half -> the next entry.
        cur.add(c, p[channels + c], s[channels + c] + ape[channels + c]);
        next.add(c, p[c], s[c] + ape[c]);
      } else {
        cur.add(c, p[c], s[c] + ape[c]);
      }
    }
    if ((pos + 1) % w.ratio == 0) {
      for (int c = threadIdx.x; c < channels; c += blockDim.x) {
        v[c] = cur.result(c);
        if (w.overlap) {
          cur.copy_from(c, next);
          next.reset(c);
        } else {
          cur.reset(c);
        }
      }
      __syncthreads();
      finish_entry(kv, batch, chunk, is_index, channels, w.norm, pos / w.ratio, w.ratio, inv_freq, eps, v, scratch);
    }
    if (snapshots != nullptr) {
      // This compressor's accumulators, [max | sum | weighted] x channels each; each thread
      // copies the channels it owns (no barrier needed).
      float* snapshot = snapshots + row * snapshot_stride + snapshot_offset + base;
      const int arrays = (w.overlap ? 2 : 1) * 3;
      for (int c = threadIdx.x; c < channels; c += blockDim.x) {
        for (int k = 0; k < arrays; ++k) snapshot[k * channels + c] = state[k * channels + c];
      }
    }
  }
}

// Pools channel c of positions [from, from + count) (channel offset `half` inside the row) into a
// register accumulator, with the streaming walk's operations in its order.
__device__ __forceinline__ void pool_span(RegisterAccumulator& acc, const float* __restrict__ proj,
                                          const float* __restrict__ score, const float* __restrict__ ape,
                                          const ChunkInfo& chunk, int width, int ratio, int half, int c,
                                          int32_t from, int count) {
  const int64_t row0 = chunk.first_row + (from - chunk.start_pos);
#pragma unroll 8
  for (int i = 0; i < count; ++i) {
    const int64_t at = (row0 + i) * width + half + c;
    const float logit = score[at] + ape[static_cast<int64_t>((from + i) % ratio) * width + half + c];
    acc.add(proj[at], logit);
  }
}

// Where a chunk's streaming walk stops and starts again (see the kernel comment).
struct ChunkSplit {
  int32_t head_end;    // H: the walk covers [start, H)
  int32_t tail_begin;  // T: the walk covers [T, end); entries [H / ratio, T / ratio) are independent
};

__device__ __forceinline__ ChunkSplit split_chunk(const ChunkInfo& chunk, const CompressorView& w) {
  const int32_t start = chunk.start_pos, end = chunk.start_pos + chunk.rows, r = w.ratio;
  int32_t head_end;
  if (w.overlap) {
    // Entry e pools positions [r (e - 1), r (e + 1)): the first one or two entries completed in
    // the chunk began before it.
    head_end = start == 0 ? 0 : (start % r == 0 ? start + r : (start / r + 2) * r);
  } else {
    head_end = (start + r - 1) / r * r;
  }
  head_end = min(head_end, end);
  return {head_end, max(head_end, end / r * r)};
}

// Modes: kWalkAll (every position streams: decode, snapshots), or per (chunk, compressor) one
// streaming block (blockIdx.z == 0: head, block-end states, tail) and gridDim.z - 1 blocks that
// pool and finish the independent entries.
__global__ void __launch_bounds__(kThreads) compressor_kernel(KvLayerView kv, BatchView batch,
                                                              CompressorView main, const float* main_kv,
                                                              const float* main_score, CompressorView index,
                                                              const float* index_kv, const float* index_score,
                                                              const float* inv_freq, float eps, float* snapshots,
                                                              int64_t snapshot_stride, int64_t snapshot_offset,
                                                              bool parallel) {
  begin_dependent_kernel();
  __shared__ float v[kMaxChannels];
  __shared__ float scratch[33];
  const ChunkInfo chunk = batch.chunks[blockIdx.x];
  const bool is_index = blockIdx.y == 1;
  const CompressorView& w = is_index ? index : main;
  const float* proj = is_index ? index_kv : main_kv;
  const float* score = is_index ? index_score : main_score;
  const int channels = w.channels;
  const int width = (w.overlap ? 2 : 1) * channels;
  // Float offsets of this compressor's accumulators inside the state.
  const int64_t base = is_index ? static_cast<int64_t>(kv.main_accumulators) * 3 * kv.main_channels : 0;
  const int32_t start = chunk.start_pos, end = chunk.start_pos + chunk.rows;

  if (!parallel) {
    walk_positions(kv, batch, chunk, is_index, w, proj, score, base, start, end, inv_freq, eps, v, scratch,
                   snapshots, snapshot_stride, snapshot_offset);
    return;
  }
  const ChunkSplit split = split_chunk(chunk, w);
  const int r = w.ratio;
  if (blockIdx.z == 0) {
    walk_positions(kv, batch, chunk, is_index, w, proj, score, base, start, split.head_end, inv_freq, eps, v,
                   scratch, nullptr, 0, 0);
    // Each block's state as the walk over [H, T) would leave it: after position
    // p = min(block end, T) - 1, which completes an entry, `cur` is empty (plain) or holds the
    // first halves of p - r + 1 .. p (overlap), and `next` is empty. The same thread owns a
    // channel throughout, so no barrier orders these writes after the head's.
    if (split.tail_begin > split.head_end) {
      const int64_t next_offset = w.overlap ? 3 * channels : 0;
      for (int32_t b = split.head_end / kBlockPositions; b <= (split.tail_begin - 1) / kBlockPositions; ++b) {
        const int32_t p = min((b + 1) * kBlockPositions, split.tail_begin) - 1;
        float* state = window_state(kv, batch, chunk, p) + base;
        const Accumulator cur{state, channels};
        const Accumulator next{state + next_offset, channels};
        for (int c = threadIdx.x; c < channels; c += blockDim.x) {
          if (w.overlap) {
            RegisterAccumulator acc;
            pool_span(acc, proj, score, w.ape, chunk, width, r, 0, c, p - r + 1, r);
            acc.store(cur, c);
            next.reset(c);
          } else {
            cur.reset(c);
          }
        }
      }
    }
    walk_positions(kv, batch, chunk, is_index, w, proj, score, base, split.tail_begin, end, inv_freq, eps, v,
                   scratch, nullptr, 0, 0);
    return;
  }
  // Independent entries: each (entry, channel) pooled from empty, as the walk would.
  for (int64_t e = split.head_end / r + (blockIdx.z - 1); e < split.tail_begin / r; e += gridDim.z - 1) {
    const int32_t first = static_cast<int32_t>(e * r);
    for (int c = threadIdx.x; c < channels; c += blockDim.x) {
      RegisterAccumulator acc;
      if (w.overlap) {
        if (e > 0) pool_span(acc, proj, score, w.ape, chunk, width, r, 0, c, first - r, r);
        pool_span(acc, proj, score, w.ape, chunk, width, r, channels, c, first, r);
      } else {
        pool_span(acc, proj, score, w.ape, chunk, width, r, 0, c, first, r);
      }
      v[c] = acc.result();
    }
    __syncthreads();
    finish_entry(kv, batch, chunk, is_index, channels, w.norm, e, r, inv_freq, eps, v, scratch);
  }
}

}  // namespace

void run_compressors(const KvLayerView& kv, const BatchView& batch, const CompressorView& main,
                     const float* main_kv, const float* main_score, const CompressorView* index,
                     const float* index_kv, const float* index_score, const float* inv_freq,
                     float eps, cudaStream_t stream, float* snapshots, int64_t snapshot_stride,
                     int64_t snapshot_offset, bool streaming_only) {
  if (batch.num_chunks == 0) return;
  if (main.channels > kMaxChannels || (index != nullptr && index->channels > kMaxChannels)) {
    fail("CUDA compressor: at most ", kMaxChannels, " channels");
  }
  const unsigned compressors = index != nullptr ? 2u : 1u;
  // Entries pool independently once chunks average 32 rows (prefill); decode steps and steps
  // with snapshots (speculative decoding) walk every position.
  const bool parallel = !streaming_only && snapshots == nullptr && batch.rows >= 32 * int64_t{batch.num_chunks};
  unsigned entry_blocks = 0;
  if (parallel) {
    const int ratio = index != nullptr ? std::min(main.ratio, index->ratio) : main.ratio;
    const int64_t most_entries = batch.rows / ratio + 1;  // in any one chunk
    // About 8 resident blocks of 256 threads per SM on an H100 (132 SMs).
    const int64_t budget = std::max<int64_t>(1, 1056 / (batch.num_chunks * static_cast<int64_t>(compressors)));
    entry_blocks = static_cast<unsigned>(std::min<int64_t>({most_entries, budget, 65534}));
  }
  const dim3 grid(static_cast<unsigned>(batch.num_chunks), compressors, 1 + entry_blocks);
  launch_dependent(compressor_kernel, grid, kThreads, 0, stream, kv, batch, main, main_kv, main_score,
                                                   index != nullptr ? *index : CompressorView{},
                                                   index_kv, index_score, inv_freq, eps, snapshots,
                                                   snapshot_stride, snapshot_offset, parallel);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

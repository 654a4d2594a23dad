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
// One block per (chunk, compressor); thread t owns channels t, t + 256, ...: it alone reads and
// writes their accumulators, so positions run sequentially with no barrier except when an
// entry completes. Same operation order as src/cpu/cpu_compressor.cpp.
#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxChannels = 1024;

__device__ __forceinline__ float mul_add(float a, float b, float c) { return __fadd_rn(__fmul_rn(a, b), c); }

struct Accumulator {
  float* data;
  int channels;
  __device__ void reset(int c) const {
    data[c] = -INFINITY;
    data[channels + c] = 0.0f;
    data[2 * channels + c] = 0.0f;
  }
  __device__ void add(int c, float value, float logit) const {
    float& max = data[c];
    float& sum = data[channels + c];
    float& weighted = data[2 * channels + c];
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
  __device__ float result(int c) const { return data[2 * channels + c] / data[channels + c]; }
  __device__ void copy_from(int c, const Accumulator& other) const {
    data[c] = other.data[c];
    data[channels + c] = other.data[channels + c];
    data[2 * channels + c] = other.data[2 * channels + c];
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

__global__ void __launch_bounds__(kThreads) compressor_kernel(KvLayerView kv, BatchView batch,
                                                              CompressorView main, const float* main_kv,
                                                              const float* main_score, CompressorView index,
                                                              const float* index_kv, const float* index_score,
                                                              const float* inv_freq, float eps, float* snapshots,
                                                              int64_t snapshot_stride, int64_t snapshot_offset) {
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
  const int64_t next_offset = w.overlap ? 3 * channels : 0;

  for (int32_t i = 0; i < chunk.rows; ++i) {
    const int32_t pos = chunk.start_pos + i;
    const int64_t row = chunk.first_row + i;
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

}  // namespace

void run_compressors(const KvLayerView& kv, const BatchView& batch, const CompressorView& main,
                     const float* main_kv, const float* main_score, const CompressorView* index,
                     const float* index_kv, const float* index_score, const float* inv_freq,
                     float eps, cudaStream_t stream, float* snapshots, int64_t snapshot_stride,
                     int64_t snapshot_offset) {
  if (batch.num_chunks == 0) return;
  if (main.channels > kMaxChannels || (index != nullptr && index->channels > kMaxChannels)) {
    fail("CUDA compressor: at most ", kMaxChannels, " channels");
  }
  const dim3 grid(static_cast<unsigned>(batch.num_chunks), index != nullptr ? 2u : 1u);
  compressor_kernel<<<grid, kThreads, 0, stream>>>(kv, batch, main, main_kv, main_score,
                                                   index != nullptr ? *index : CompressorView{},
                                                   index_kv, index_score, inv_freq, eps, snapshots,
                                                   snapshot_stride, snapshot_offset);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

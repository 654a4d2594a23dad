// Hyper-connections, fused per token (one block per token).
//
// Layout: streams fp32 [rows, hc, hidden]; fn fp32 [mix, hc * hidden] with mix = (2 + hc) hc
// (sublayers) or hc (head); base [mix]; scale [3] or [1]. Outputs: y [rows, hidden] (already
// RMS-normed with the sublayer's norm weight), post [rows, hc], comb [rows, hc, hc] (row j =
// source stream, column k = destination).
// hc_pre runs in two launches: (rows x slices) blocks compute partial mix dot products and the
// sum of squares over slices of 1024 flat elements (so one token spreads over many SMs: the
// fn matrix is 1.5 MB at Flash sizes), then one block per token adds the slices in order,
// runs (one thread) the sigmoid/softmax split and the Sinkhorn iterations, the pre-weighted
// stream sum and the RMSNorm that follows it. hc_head likewise. hc_post is elementwise.
// Prefill (>= 256 rows, hc * hidden a multiple of 1024): the same partials from blocks that keep a
// slice's fn in registers and stream many rows through a copy-engine ring, the Sinkhorn split one
// thread per row, then the weighted sum; hc_post with 16-byte vectors. Every output keeps its
// operations and their order, so both paths give the same bits (tested).
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kMaxHc = 4;
constexpr int kMaxMix = (2 + kMaxHc) * kMaxHc;
constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float mul_add(float a, float b, float c) { return __fadd_rn(__fmul_rn(a, b), c); }

constexpr int kSlice = 1024;
constexpr int kSums = kMaxMix + 1;  // mixes, then the sum of squares at kMaxMix

int slices_of(int64_t n) { return static_cast<int>((n + kSlice - 1) / kSlice); }

// Partial dot products of every mix row with one slice of a token's flat streams, and the
// slice's sum of squares: partial[(r * slices + s) * kSums + m]. Fixed order: strided per
// thread, lanes, warps.
__global__ void __launch_bounds__(kThreads) hc_mix_partial_kernel(const float* fn, const float* streams,
                                                                  const int32_t* row_index, int64_t n,
                                                                  int mix, float* partial) {
  begin_dependent_kernel();
  __shared__ float warp_sums[kThreads / 32][kSums];
  const int64_t r = blockIdx.x;
  const float* flat = streams + (row_index != nullptr ? static_cast<int64_t>(row_index[r]) : r) * n;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * kSlice;
  const int64_t end = min(n, begin + kSlice);
  float acc[kSums];
#pragma unroll
  for (int m = 0; m < kSums; ++m) acc[m] = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const float v = flat[i];
    acc[kMaxMix] = fmaf(v, v, acc[kMaxMix]);
#pragma unroll
    for (int m = 0; m < kMaxMix; ++m) {
      if (m < mix) acc[m] = fmaf(__ldg(fn + m * n + i), v, acc[m]);
    }
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int m = 0; m < kSums; ++m) {
    const float total = warp_sum(acc[m]);
    if (lane == 0) warp_sums[warp][m] = total;
  }
  __syncthreads();
  if (threadIdx.x < kSums) {
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w][threadIdx.x];
    partial[(r * gridDim.y + blockIdx.y) * kSums + threadIdx.x] = total;
  }
}

// The same partials for many rows (prefill), bitwise: block (slice s, row group) keeps the
// slice's fn values in registers (thread t holds fn[m][s * 1024 + t + 256 k], the elements the
// kernel above gives thread t) and streams its rows' slices through a shared-memory ring filled by
// the copy engine (kStages rows in flight). Per row: each thread's fma chains over k as above; the
// warp butterfly of warp_sum rebuilt as an explicit tree over the 32 lane values in shared memory
// (xor-butterfly sums are the same at every lane, and fp32 addition is commutative, so one thread
// computing ((v0 + v16) + (v8 + v24)) + ... gets the same bits); then the warps in order.
constexpr int kStages = 8;
constexpr int kPitch = 33;  // red[w][m][lane] row pitch: lane values of one sum in distinct banks

__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}
__device__ __forceinline__ void stage_barrier_init(uint64_t* barrier) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(shared_address(barrier)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One bulk copy of `bytes` into `shared`, completing on `barrier` (thread 0 only).
__device__ __forceinline__ void stage_copy(void* shared, const void* global, uint32_t bytes, uint64_t* barrier) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(bytes)
               : "memory");
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   shared_address(shared)),
               "l"(global), "r"(bytes), "r"(shared_address(barrier))
               : "memory");
}
__device__ __forceinline__ void stage_wait(uint64_t* barrier, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait;\n"
      "}\n" ::"r"(shared_address(barrier)),
      "r"(parity)
      : "memory");
}

constexpr size_t kRowsSharedBytes =
    kStages * kSlice * sizeof(float) + (kThreads / 32) * kSums * kPitch * sizeof(float) +
    (kThreads / 32) * kSums * sizeof(float) + kStages * sizeof(uint64_t);

__global__ void __launch_bounds__(kThreads, 1) hc_mix_rows_kernel(const float* fn, const float* streams,
                                                                  int64_t rows, int64_t n, int mix,
                                                                  int64_t rows_per_block, float* partial) {
  begin_dependent_kernel();
  extern __shared__ __align__(128) unsigned char shared_raw[];
  float* ring = reinterpret_cast<float*>(shared_raw);                // [kStages][kSlice]
  float* red = ring + kStages * kSlice;                              // [warps][kSums][kPitch]
  float* warp_totals = red + (kThreads / 32) * kSums * kPitch;        // [warps][kSums]
  uint64_t* full = reinterpret_cast<uint64_t*>(warp_totals + (kThreads / 32) * kSums);
  const int slice = blockIdx.x;
  const int slices = gridDim.x;
  const int64_t begin = static_cast<int64_t>(slice) * kSlice;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  const int64_t count = min(rows, first + rows_per_block) - first;
  if (count <= 0) return;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  constexpr uint32_t kBytes = kSlice * sizeof(float);

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) stage_barrier_init(&full[s]);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages && s < count; ++s) stage_copy(ring + s * kSlice, streams + (first + s) * n + begin, kBytes, &full[s]);
  }
  float w[kSlice / kThreads][kMaxMix];
#pragma unroll
  for (int k = 0; k < kSlice / kThreads; ++k) {
#pragma unroll
    for (int m = 0; m < kMaxMix; ++m) w[k][m] = m < mix ? __ldg(fn + m * n + begin + threadIdx.x + k * kThreads) : 0.0f;
  }
  for (int64_t j = 0; j < count; ++j) {
    const int stage = static_cast<int>(j % kStages);
    stage_wait(&full[stage], static_cast<uint32_t>((j / kStages) & 1));
    const float* v = ring + stage * kSlice;
    float acc[kSums];
#pragma unroll
    for (int m = 0; m < kSums; ++m) acc[m] = 0.0f;
#pragma unroll
    for (int k = 0; k < kSlice / kThreads; ++k) {
      const float x = v[threadIdx.x + k * kThreads];
      acc[kMaxMix] = fmaf(x, x, acc[kMaxMix]);
#pragma unroll
      for (int m = 0; m < kMaxMix; ++m) {
        if (m < mix) acc[m] = fmaf(w[k][m], x, acc[m]);
      }
    }
#pragma unroll
    for (int m = 0; m < kSums; ++m) red[(warp * kSums + m) * kPitch + lane] = acc[m];
    __syncthreads();  // every thread is done with this stage and wrote its sums
    if (threadIdx.x == 0 && j + kStages < count) {
      stage_copy(ring + stage * kSlice, streams + (first + j + kStages) * n + begin, kBytes, &full[stage]);
    }
    if (threadIdx.x < (kThreads / 32) * kSums) {
      // The butterfly of warp_sum: offsets 16, 8, 4, 2, 1.
      const float* lanes = red + threadIdx.x * kPitch;
      float t[16];
#pragma unroll
      for (int i = 0; i < 16; ++i) t[i] = lanes[i] + lanes[i + 16];
#pragma unroll
      for (int i = 0; i < 8; ++i) t[i] = t[i] + t[i + 8];
#pragma unroll
      for (int i = 0; i < 4; ++i) t[i] = t[i] + t[i + 4];
#pragma unroll
      for (int i = 0; i < 2; ++i) t[i] = t[i] + t[i + 2];
      warp_totals[threadIdx.x] = t[0] + t[1];
    }
    __syncthreads();
    if (threadIdx.x < kSums) {
      float total = 0.0f;
      for (int u = 0; u < kThreads / 32; ++u) total += warp_totals[u * kSums + threadIdx.x];
      partial[((first + j) * slices + slice) * kSums + threadIdx.x] = total;
    }
  }
}

// sums[m] = the slices' partials added in slice order (all kSums values).
__device__ void add_slices(const float* partial, int64_t r, int slices, float* sums) {
  if (threadIdx.x < kSums) {
    float total = 0.0f;
    for (int s = 0; s < slices; ++s) total += partial[(r * slices + s) * kSums + threadIdx.x];
    sums[threadIdx.x] = total;
  }
  __syncthreads();
}

// src/cpu/cpu_ops.cpp hc_split_sinkhorn, one thread.
__device__ void split_sinkhorn(const float* mixes, const float* scale, const float* base, int n,
                               int iterations, float eps, float* pre, float* post, float* comb) {
  for (int j = 0; j < n; ++j) {
    pre[j] = sigmoid(mul_add(mixes[j], scale[0], base[j])) + eps;
    post[j] = 2.0f * sigmoid(mul_add(mixes[n + j], scale[1], base[n + j]));
  }
  for (int j = 0; j < n; ++j) {
    for (int k = 0; k < n; ++k) comb[j * n + k] = mul_add(mixes[2 * n + j * n + k], scale[2], base[2 * n + j * n + k]);
  }
  float sums[kMaxHc];
  for (int iteration = 0; iteration < iterations; ++iteration) {
    for (int j = 0; j < n; ++j) {
      float* row = comb + j * n;
      if (iteration == 0) {
        float row_max = row[0];
        for (int k = 1; k < n; ++k) row_max = fmaxf(row_max, row[k]);
        float total = 0.0f;
        for (int k = 0; k < n; ++k) total += (row[k] = expf(row[k] - row_max));
        for (int k = 0; k < n; ++k) row[k] = row[k] / total + eps;
      } else {
        float total = 0.0f;
        for (int k = 0; k < n; ++k) total += row[k];
        for (int k = 0; k < n; ++k) row[k] /= total + eps;
      }
    }
    for (int k = 0; k < n; ++k) {
      float total = 0.0f;
      for (int j = 0; j < n; ++j) total += comb[j * n + k];
      sums[k] = total;
    }
    for (int j = 0; j < n; ++j) {
      for (int k = 0; k < n; ++k) comb[j * n + k] /= sums[k] + eps;
    }
  }
}

// split_sinkhorn by one warp, for the one-row-per-block kernel (decode): lane j n + k owns
// comb[j][k] and repeats its row's (or column's) sums in split_sinkhorn's order, so every value
// is bitwise the one the single thread computes; lanes j < n also make pre[j] and post[j].
// pre goes to shared memory, post and comb to their global rows. Called by all 32 lanes.
__device__ void warp_split_sinkhorn(const float* sums, float inverse_rms, const float* scale,
                                    const float* base, int n, int iterations, float eps, float* pre,
                                    float* post_out, float* comb_out) {
  __shared__ float c[kMaxHc * kMaxHc];
  const int lane = threadIdx.x & 31;
  const int nn = n * n;
  const int j = lane / n;
  const int k = lane % n;
  if (lane < n) {
    pre[lane] = sigmoid(mul_add(sums[lane] * inverse_rms, scale[0], base[lane])) + eps;
    post_out[lane] = 2.0f * sigmoid(mul_add(sums[n + lane] * inverse_rms, scale[1], base[n + lane]));
  }
  if (lane < nn) c[lane] = mul_add(sums[2 * n + lane] * inverse_rms, scale[2], base[2 * n + lane]);
  __syncwarp();
  for (int iteration = 0; iteration < iterations; ++iteration) {
    float value = 0.0f;
    if (lane < nn) {
      const float* row = c + j * n;
      if (iteration == 0) {
        float row_max = row[0];
        for (int q = 1; q < n; ++q) row_max = fmaxf(row_max, row[q]);
        float total = 0.0f;
        float mine = 0.0f;
        for (int q = 0; q < n; ++q) {
          const float e = expf(row[q] - row_max);
          total += e;
          if (q == k) mine = e;
        }
        value = mine / total + eps;
      } else {
        float total = 0.0f;
        for (int q = 0; q < n; ++q) total += row[q];
        value = row[k] / (total + eps);
      }
    }
    __syncwarp();
    if (lane < nn) c[lane] = value;
    __syncwarp();
    if (lane < nn) {
      float total = 0.0f;
      for (int q = 0; q < n; ++q) total += c[q * n + k];
      value = c[lane] / (total + eps);
    }
    __syncwarp();
    if (lane < nn) c[lane] = value;
    __syncwarp();
  }
  if (lane < nn) comb_out[lane] = c[lane];
}

// y = RMSNorm(sum_j weights[j] stream_j) * norm_weight, the pre-norm sum staged in shared memory.
__device__ void weighted_sum_norm(const float* flat, const float* weights, int hc, int64_t hidden,
                                  float norm_eps, const float* norm_weight, float* staged, float* y) {
  __shared__ float scratch[33];
  float square = 0.0f;
  for (int64_t i = threadIdx.x; i < hidden; i += kThreads) {
    float total = 0.0f;
    for (int j = 0; j < hc; ++j) total = mul_add(weights[j], flat[j * hidden + i], total);
    staged[i] = total;
    square = fmaf(total, total, square);
  }
  const float mean_square = block_sum(square, scratch) / static_cast<float>(hidden);
  const float inverse = 1.0f / sqrtf(mean_square + norm_eps);
  for (int64_t i = threadIdx.x; i < hidden; i += kThreads) {
    const float normalized = staged[i] * inverse;
    y[i] = norm_weight != nullptr ? norm_weight[i] * normalized : normalized;
  }
}

__global__ void __launch_bounds__(kThreads) hc_pre_kernel(HyperConnectionView w, const float* streams,
                                                          int hc, int64_t hidden, int iterations,
                                                          float hc_eps, float norm_eps,
                                                          const float* norm_weight, const float* partial,
                                                          int slices, float* y, float* post, float* comb) {
  begin_dependent_kernel();
  extern __shared__ float staged[];
  __shared__ float sums[kSums];
  __shared__ float pre[kMaxHc];
  const int64_t r = blockIdx.x;
  const int64_t n = hc * hidden;
  const float* flat = streams + r * n;
  add_slices(partial, r, slices, sums);
  if (threadIdx.x < 32) {
    const float inverse_rms = 1.0f / sqrtf(sums[kMaxMix] / static_cast<float>(n) + norm_eps);
    warp_split_sinkhorn(sums, inverse_rms, w.scale, w.base, hc, iterations, hc_eps, pre, post + r * hc,
                        comb + r * hc * hc);
  }
  __syncthreads();
  weighted_sum_norm(flat, pre, hc, hidden, norm_eps, norm_weight, staged, y + r * hidden);
}

// Prefill form of hc_pre_kernel, bitwise the same: one thread per row adds the slices (each sum
// in slice order, as add_slices) and runs the Sinkhorn split, so the serial part no longer holds a
// 256-thread block; pre goes to pre_out [rows, hc] for hc_weighted_sum_kernel.
__global__ void hc_split_rows_kernel(HyperConnectionView w, int64_t rows, int hc, int64_t hidden, int iterations,
                                     float hc_eps, float norm_eps, const float* partial, int slices, float* pre_out,
                                     float* post, float* comb) {
  begin_dependent_kernel();
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const int64_t n = hc * hidden;
  const int mix = (2 + hc) * hc;
  float sums[kSums];
  for (int m = 0; m < kSums; ++m) {
    float total = 0.0f;
    for (int s = 0; s < slices; ++s) total += partial[(r * slices + s) * kSums + m];
    sums[m] = total;
  }
  const float inverse_rms = 1.0f / sqrtf(sums[kMaxMix] / static_cast<float>(n) + norm_eps);
  float mixes[kMaxMix];
  for (int m = 0; m < mix; ++m) mixes[m] = sums[m] * inverse_rms;
  float pre[kMaxHc];
  float local_post[kMaxHc];
  float local_comb[kMaxHc * kMaxHc];
  split_sinkhorn(mixes, w.scale, w.base, hc, iterations, hc_eps, pre, local_post, local_comb);
  for (int j = 0; j < hc; ++j) {
    pre_out[r * hc + j] = pre[j];
    post[r * hc + j] = local_post[j];
  }
  for (int j = 0; j < hc * hc; ++j) comb[r * hc * hc + j] = local_comb[j];
}

__global__ void __launch_bounds__(kThreads) hc_weighted_sum_kernel(const float* streams, const float* pre_in, int hc,
                                                                   int64_t hidden, float norm_eps,
                                                                   const float* norm_weight, float* y) {
  begin_dependent_kernel();
  extern __shared__ float staged[];
  __shared__ float pre[kMaxHc];
  const int64_t r = blockIdx.x;
  if (threadIdx.x < hc) pre[threadIdx.x] = pre_in[r * hc + threadIdx.x];
  __syncthreads();
  weighted_sum_norm(streams + r * hc * hidden, pre, hc, hidden, norm_eps, norm_weight, staged, y + r * hidden);
}

__global__ void hc_post_kernel(const float* out, const float* post, const float* comb, int64_t rows,
                               int hc, int64_t hidden, float* streams) {
  begin_dependent_kernel();
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= rows * hidden) return;
  const int64_t r = index / hidden;
  const int64_t i = index % hidden;
  float* token = streams + r * hc * hidden;
  float old[kMaxHc];
  for (int j = 0; j < hc; ++j) old[j] = token[j * hidden + i];
  const float o = out[index];
  const float* c = comb + r * hc * hc;
  for (int k = 0; k < hc; ++k) {
    float mixed = 0.0f;
    for (int j = 0; j < hc; ++j) mixed = mul_add(c[j * hc + k], old[j], mixed);
    token[k * hidden + i] = mul_add(post[r * hc + k], o, mixed);
  }
}

// hc_post for hidden % 4 == 0: four consecutive elements per thread (16-byte accesses), one row
// per blockIdx.y, the row's post and comb loaded once; each element's operations as above.
__global__ void __launch_bounds__(256) hc_post_vector_kernel(const float* out, const float* post, const float* comb,
                                                             int hc, int64_t hidden, float* streams) {
  begin_dependent_kernel();
  const int64_t r = blockIdx.y;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i >= hidden) return;
  float c[kMaxHc * kMaxHc];
  float p[kMaxHc];
  for (int j = 0; j < hc * hc; ++j) c[j] = comb[r * hc * hc + j];
  for (int j = 0; j < hc; ++j) p[j] = post[r * hc + j];
  float* token = streams + r * hc * hidden;
  float4 old[kMaxHc];
#pragma unroll
  for (int j = 0; j < kMaxHc; ++j) {
    if (j < hc) old[j] = *reinterpret_cast<const float4*>(token + j * hidden + i);
  }
  const float4 o = *reinterpret_cast<const float4*>(out + r * hidden + i);
#pragma unroll
  for (int k = 0; k < kMaxHc; ++k) {
    if (k >= hc) break;
    float4 mixed = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int j = 0; j < kMaxHc; ++j) {
      if (j < hc) {
        const float weight = c[j * hc + k];
        mixed.x = mul_add(weight, old[j].x, mixed.x);
        mixed.y = mul_add(weight, old[j].y, mixed.y);
        mixed.z = mul_add(weight, old[j].z, mixed.z);
        mixed.w = mul_add(weight, old[j].w, mixed.w);
      }
    }
    const float4 result = make_float4(mul_add(p[k], o.x, mixed.x), mul_add(p[k], o.y, mixed.y),
                                      mul_add(p[k], o.z, mixed.z), mul_add(p[k], o.w, mixed.w));
    *reinterpret_cast<float4*>(token + k * hidden + i) = result;
  }
}

__global__ void __launch_bounds__(kThreads) hc_head_kernel(HyperConnectionView w, const float* streams,
                                                           const int32_t* row_index, int hc,
                                                           int64_t hidden, float hc_eps, float norm_eps,
                                                           const float* norm_weight, const float* partial,
                                                           int slices, float* y) {
  begin_dependent_kernel();
  extern __shared__ float staged[];
  __shared__ float sums[kSums];
  __shared__ float pre[kMaxHc];
  const int64_t n = hc * hidden;
  const float* flat = streams + static_cast<int64_t>(row_index[blockIdx.x]) * n;
  add_slices(partial, blockIdx.x, slices, sums);
  if (threadIdx.x == 0) {
    const float inverse_rms = 1.0f / sqrtf(sums[kMaxMix] / static_cast<float>(n) + norm_eps);
    for (int j = 0; j < hc; ++j) pre[j] = sigmoid(mul_add(sums[j] * inverse_rms, w.scale[0], w.base[j])) + hc_eps;
  }
  __syncthreads();
  weighted_sum_norm(flat, pre, hc, hidden, norm_eps, norm_weight, staged, y + blockIdx.x * hidden);
}

void check_sizes(int hc, int64_t hidden) {
  if (hc < 1 || hc > kMaxHc) fail("CUDA hyper-connections support hc_mult up to ", kMaxHc, ", got ", hc);
  if (hidden * 4 > 200 * 1024) fail("CUDA hyper-connections: hidden size ", hidden, " too large");
}

// Raises a kernel's dynamic shared memory limit once per size (`allowed` is per kernel).
void allow_shared(const void* kernel, int64_t bytes, int64_t& allowed) {
  if (bytes > allowed) {
    LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    allowed = bytes;
  }
}

int64_t g_pre_shared = 48 * 1024;
int64_t g_rows_shared = 48 * 1024;
int64_t g_sum_shared = 48 * 1024;
// hc_pre takes the row-streaming path from this many rows on.
constexpr int64_t kRowsPathMinRows = 256;
int64_t g_head_shared = 48 * 1024;

}  // namespace

size_t hc_workspace_floats(int64_t rows, int hc, int64_t hidden) {
  // Slice partials, then pre [rows, hc] of the prefill path.
  return static_cast<size_t>(rows) * (static_cast<size_t>(slices_of(hc * hidden)) * kSums + kMaxHc);
}

void hc_pre(const HyperConnectionView& w, const float* streams, int64_t rows, int hc,
            int64_t hidden, int iterations, float hc_eps, float norm_eps, const float* norm_weight,
            float* y, float* post, float* comb, float* workspace, cudaStream_t stream, bool reference_kernels) {
  if (rows <= 0) return;
  check_sizes(hc, hidden);
  const int64_t n = hc * hidden;
  const int slices = slices_of(n);
  const int64_t shared = hidden * static_cast<int64_t>(sizeof(float));
  if (reference_kernels || rows < kRowsPathMinRows || n % kSlice != 0) {
    launch_dependent(hc_mix_partial_kernel, dim3(static_cast<unsigned>(rows), static_cast<unsigned>(slices)), kThreads, 0, stream,
        w.fn, streams, nullptr, n, (2 + hc) * hc, workspace);
    LONGCTX_CUDA_CHECK_LAUNCH();
    allow_shared(reinterpret_cast<const void*>(hc_pre_kernel), shared, g_pre_shared);
    launch_dependent(hc_pre_kernel, static_cast<unsigned>(rows), kThreads, shared, stream,
        w, streams, hc, hidden, iterations, hc_eps, norm_eps, norm_weight, workspace, slices, y, post, comb);
    LONGCTX_CUDA_CHECK_LAUNCH();
    return;
  }
  static int sm_count = 0;
  if (sm_count == 0) {
    int device = 0;
    LONGCTX_CUDA_CHECK(cudaGetDevice(&device));
    LONGCTX_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  }
  // One resident block per SM: slices x row groups ~ the SM count.
  const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(rows, sm_count / slices));
  const int64_t rows_per_block = (rows + groups - 1) / groups;
  allow_shared(reinterpret_cast<const void*>(hc_mix_rows_kernel), static_cast<int64_t>(kRowsSharedBytes),
               g_rows_shared);
  launch_dependent(hc_mix_rows_kernel, dim3(static_cast<unsigned>(slices), static_cast<unsigned>(groups)), kThreads, kRowsSharedBytes, stream, w.fn, streams, rows, n, (2 + hc) * hc, rows_per_block, workspace);
  LONGCTX_CUDA_CHECK_LAUNCH();
  float* pre = workspace + static_cast<size_t>(rows) * static_cast<size_t>(slices) * kSums;
  launch_dependent(hc_split_rows_kernel, ceil_div_u(rows, 128), 128, 0, stream, w, rows, hc, hidden, iterations, hc_eps, norm_eps,
                                                                   workspace, slices, pre, post, comb);
  LONGCTX_CUDA_CHECK_LAUNCH();
  allow_shared(reinterpret_cast<const void*>(hc_weighted_sum_kernel), shared, g_sum_shared);
  launch_dependent(hc_weighted_sum_kernel, static_cast<unsigned>(rows), kThreads, shared, stream, streams, pre, hc, hidden, norm_eps,
                                                                                   norm_weight, y);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void hc_post(const float* out, const float* post, const float* comb, int64_t rows, int hc,
             int64_t hidden, float* streams, cudaStream_t stream, bool reference_kernels) {
  if (rows <= 0) return;
  check_sizes(hc, hidden);
  if (!reference_kernels && hidden % 4 == 0) {
    launch_dependent(hc_post_vector_kernel, dim3(ceil_div_u(hidden / 4, 256), static_cast<unsigned>(rows)), 256, 0, stream,
        out, post, comb, hc, hidden, streams);
  } else {
    launch_dependent(hc_post_kernel, ceil_div_u(rows * hidden, 256), 256, 0, stream, out, post, comb, rows, hc, hidden, streams);
  }
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void hc_head(const HyperConnectionView& w, const float* streams, const int32_t* row_index,
             int64_t count, int hc, int64_t hidden, float hc_eps, float norm_eps,
             const float* norm_weight, float* y, float* workspace, cudaStream_t stream) {
  if (count <= 0) return;
  check_sizes(hc, hidden);
  const int slices = slices_of(hc * hidden);
  launch_dependent(hc_mix_partial_kernel, dim3(static_cast<unsigned>(count), static_cast<unsigned>(slices)), kThreads, 0, stream,
      w.fn, streams, row_index, hc * hidden, hc, workspace);
  LONGCTX_CUDA_CHECK_LAUNCH();
  const int64_t shared = hidden * static_cast<int64_t>(sizeof(float));
  allow_shared(reinterpret_cast<const void*>(hc_head_kernel), shared, g_head_shared);
  launch_dependent(hc_head_kernel, static_cast<unsigned>(count), kThreads, shared, stream,
      w, streams, row_index, hc, hidden, hc_eps, norm_eps, norm_weight, workspace, slices, y);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

// Mixture of experts: routing (hash and scored), token permutation by expert, the SwiGLU
// between the grouped expert GEMMs (linear.cu grouped_linear, fp4 weights decoded in the
// kernel), and the un-permute with the weighted sum and the shared expert.
//
// Layout: router logits fp32 [rows, experts]; experts/weights [rows, k] (int32 / fp32); a slot
// is one (row, j) entry; slots are grouped by expert (offsets/counts [experts]); slot_rows and
// slot_weights [rows * k]; entry_slot [rows, k] maps each entry to its slot.
// Slot order inside an expert comes from atomics and is not deterministic, but it does not
// matter: every slot's GEMM output is computed independently with a fixed reduction order, and
// moe_combine adds a row's experts in ascending expert id (then j), as the CPU reference does.
// The fp8 form of the SwiGLU (swiglu_quantize, Fp8Activations in kernels.h): one warp per
// (row, 128-column block), lane l on columns 4l..4l+3, the same per-element arithmetic.
#include "cuda/cuda_check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/fp8_activation.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kMaxExperts = 512;
constexpr int kMaxTopk = 16;
constexpr int kRouteWarps = 4;

__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

__global__ void route_kernel(const float* logits, const float* bias, const int32_t* tid2eid,
                             const int32_t* tokens, int64_t rows, int num_experts, int k, int scoring,
                             bool normalize, float scaling, int32_t* experts, float* weights) {
  begin_dependent_kernel();
  __shared__ float scores[kRouteWarps][kMaxExperts];
  __shared__ unsigned char taken[kRouteWarps][kMaxExperts];
  __shared__ int32_t chosen[kRouteWarps][kMaxTopk];
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRouteWarps + warp;
  if (r >= rows) return;
  float* s = scores[warp];
  for (int e = lane; e < num_experts; e += 32) {
    const float z = logits[r * num_experts + e];
    if (scoring == kScoreSqrtSoftplus) s[e] = sqrtf(softplus(z));
    else if (scoring == kScoreSigmoid) s[e] = 1.0f / (1.0f + expf(-z));
    else s[e] = z;
    taken[warp][e] = 0;
  }
  __syncwarp();
  if (scoring == kScoreSoftmax && lane == 0) {
    float m = s[0];
    for (int e = 1; e < num_experts; ++e) m = fmaxf(m, s[e]);
    float total = 0.0f;
    for (int e = 0; e < num_experts; ++e) total += (s[e] = expf(s[e] - m));
    for (int e = 0; e < num_experts; ++e) s[e] /= total;
  }
  __syncwarp();
  if (tid2eid != nullptr) {
    if (lane < k) chosen[warp][lane] = tid2eid[static_cast<int64_t>(tokens[r]) * k + lane];
  } else {
    // Top k by score + bias, ties to the lower expert id, best first.
    for (int j = 0; j < k; ++j) {
      float best = -INFINITY;
      int best_id = num_experts;
      for (int e = lane; e < num_experts; e += 32) {
        if (taken[warp][e]) continue;
        const float value = s[e] + (bias != nullptr ? bias[e] : 0.0f);
        if (best_id == num_experts || value > best) {
          best = value;
          best_id = e;
        }
      }
      for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, best, offset);
        const int other_id = __shfl_xor_sync(0xffffffffu, best_id, offset);
        if (other_id < num_experts &&
            (best_id == num_experts || other > best || (other == best && other_id < best_id))) {
          best = other;
          best_id = other_id;
        }
      }
      if (lane == 0) {
        chosen[warp][j] = best_id;
        taken[warp][best_id] = 1;
      }
      __syncwarp();
    }
  }
  __syncwarp();
  if (lane == 0) {
    float w[kMaxTopk];
    float total = 0.0f;
    for (int j = 0; j < k; ++j) total += (w[j] = s[chosen[warp][j]]);
    for (int j = 0; j < k; ++j) {
      if (normalize) w[j] /= total;
      w[j] *= scaling;
      experts[r * k + j] = chosen[warp][j];
      weights[r * k + j] = w[j];
    }
  }
}

__global__ void count_kernel(const int32_t* experts, int64_t entries, int32_t* counts) {
  begin_dependent_kernel();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < entries) atomicAdd(&counts[experts[i]], 1);
}

__global__ void offsets_kernel(const int32_t* counts, int num_experts, int32_t* offsets, int32_t* fill,
                               int32_t* active) {
  begin_dependent_kernel();
  if (threadIdx.x != 0) return;
  int32_t total = 0;
  int busy = 0;
  for (int e = 0; e < num_experts; ++e) {
    offsets[e] = total;
    fill[e] = 0;
    total += counts[e];
    if (counts[e] > 0) active[busy++] = e;
  }
  for (int e = busy; e < num_experts; ++e) active[e] = -1;
}

__global__ void scatter_kernel(const int32_t* experts, const float* weights, int64_t entries, int k,
                               const int32_t* offsets, int32_t* fill, int32_t* slot_rows,
                               float* slot_weights, int32_t* entry_slot) {
  begin_dependent_kernel();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= entries) return;
  const int32_t e = experts[i];
  const int32_t slot = offsets[e] + atomicAdd(&fill[e], 1);
  slot_rows[slot] = static_cast<int32_t>(i / k);
  slot_weights[slot] = weights[i];
  entry_slot[i] = slot;
}

// One SwiGLU output (both kernels: the same bits).
__device__ __forceinline__ float swiglu_value(float g, float u, float limit) {
  if (limit > 0.0f) {
    g = fminf(g, limit);
    u = fminf(fmaxf(u, -limit), limit);
  }
  return __fmul_rn(g / (1.0f + expf(-g)), u);
}

__global__ void swiglu_kernel(const float* gate, const float* up, int64_t rows, int64_t inter,
                              const float* row_weights, float limit, float* out) {
  begin_dependent_kernel();
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= rows * inter) return;
  float h = swiglu_value(gate[index], up[index], limit);
  if (row_weights != nullptr) h = __fmul_rn(row_weights[index / inter], h);
  out[index] = h;
}

__global__ void swiglu_quantize_kernel(const float* gate, const float* up, int64_t rows, int64_t inter,
                                       const float* row_weights, float limit, Fp8Activations a) {
  begin_dependent_kernel();
  const int64_t blocks_per_row = inter / 128;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (index >= rows * blocks_per_row) return;
  const int64_t r = index / blocks_per_row;
  const int64_t b = index % blocks_per_row;
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int64_t at = r * inter + b * 128 + 4 * lane;
  const float4 g = *reinterpret_cast<const float4*>(gate + at);
  const float4 u = *reinterpret_cast<const float4*>(up + at);
  float v[4] = {swiglu_value(g.x, u.x, limit), swiglu_value(g.y, u.y, limit), swiglu_value(g.z, u.z, limit),
                swiglu_value(g.w, u.w, limit)};
  if (row_weights != nullptr) {
    const float weight = row_weights[r];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = __fmul_rn(weight, v[i]);
  }
  uint32_t packed = 0;
  const float scale = fp8_quantize_block(v, &packed);
  fp8_store_block(a, r, b, lane, v, packed, scale);
}

__global__ void combine_kernel(const float* slot_out, const int32_t* entry_slot, const int32_t* experts,
                               int k, int64_t hidden, const float* shared_out, float* out) {
  begin_dependent_kernel();
  __shared__ int32_t order[kMaxTopk];
  const int64_t r = blockIdx.x;
  if (threadIdx.x == 0) {
    // The row's entries by (expert, j): the CPU adds experts in ascending id.
    int32_t js[kMaxTopk];
    for (int j = 0; j < k; ++j) js[j] = j;
    for (int a = 1; a < k; ++a) {
      const int32_t j = js[a];
      int b = a - 1;
      while (b >= 0 && experts[r * k + js[b]] > experts[r * k + j]) {
        js[b + 1] = js[b];
        --b;
      }
      js[b + 1] = j;
    }
    for (int j = 0; j < k; ++j) order[j] = entry_slot[r * k + js[j]];
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    float total = 0.0f;
    for (int j = 0; j < k; ++j) total += slot_out[static_cast<int64_t>(order[j]) * hidden + i];
    if (shared_out != nullptr) total += shared_out[r * hidden + i];
    out[r * hidden + i] = total;
  }
}

}  // namespace

void moe_route(const float* logits, const float* bias, const int32_t* tid2eid,
               const int32_t* tokens, int64_t rows, int num_experts, int k, int scoring,
               bool normalize, float scaling, int32_t* experts, float* weights,
               cudaStream_t stream) {
  if (rows <= 0) return;
  if (num_experts > kMaxExperts || k > kMaxTopk || k > num_experts) {
    fail("CUDA MoE: supports up to ", kMaxExperts, " experts and ", kMaxTopk, " per token");
  }
  launch_dependent(route_kernel, ceil_div_u(rows, kRouteWarps), kRouteWarps * 32, 0, stream,
      logits, bias, tid2eid, tokens, rows, num_experts, k, scoring, normalize, scaling, experts, weights);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void moe_permute(const int32_t* experts, const float* weights, int64_t rows, int k,
                 int num_experts, int32_t* counts, int32_t* offsets, int32_t* fill,
                 int32_t* slot_rows, float* slot_weights, int32_t* entry_slot, int32_t* active,
                 cudaStream_t stream) {
  if (rows <= 0) return;
  const int64_t entries = rows * k;
  LONGCTX_CUDA_CHECK(cudaMemsetAsync(counts, 0, static_cast<size_t>(num_experts) * sizeof(int32_t), stream));
  launch_dependent(count_kernel, ceil_div_u(entries, 256), 256, 0, stream, experts, entries, counts);
  LONGCTX_CUDA_CHECK_LAUNCH();
  launch_dependent(offsets_kernel, 1, 32, 0, stream, counts, num_experts, offsets, fill, active);
  LONGCTX_CUDA_CHECK_LAUNCH();
  launch_dependent(scatter_kernel, ceil_div_u(entries, 256), 256, 0, stream, experts, weights, entries, k, offsets, fill,
                                                              slot_rows, slot_weights, entry_slot);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void swiglu(const float* gate, const float* up, int64_t rows, int64_t inter,
            const float* row_weights, float limit, float* out, cudaStream_t stream) {
  const int64_t n = rows * inter;
  if (n <= 0) return;
  launch_dependent(swiglu_kernel, ceil_div_u(n, 256), 256, 0, stream, gate, up, rows, inter, row_weights, limit, out);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

Fp8Activations swiglu_quantize(const float* gate, const float* up, int64_t rows, int64_t inter,
                               const float* row_weights, float limit, void* buffer, cudaStream_t stream) {
  if (inter % 128 != 0 || reinterpret_cast<uintptr_t>(gate) % 16 != 0 || reinterpret_cast<uintptr_t>(up) % 16 != 0) {
    fail("SwiGLU to fp8: rows of ", inter, " floats must be 128-float blocks, 16-byte aligned");
  }
  const Fp8Activations a = fp8_activations_in(buffer, rows, inter);
  const int64_t warps = rows * (inter / 128);
  if (warps <= 0) return a;
  launch_dependent(swiglu_quantize_kernel, ceil_div_u(warps, 8), 256, 0, stream, gate, up, rows, inter, row_weights, limit, a);
  LONGCTX_CUDA_CHECK_LAUNCH();
  return a;
}

void moe_combine(const float* slot_out, const int32_t* entry_slot, const int32_t* experts,
                 int64_t rows, int k, int64_t hidden, const float* shared, float* out,
                 cudaStream_t stream) {
  if (rows <= 0) return;
  launch_dependent(combine_kernel, static_cast<unsigned>(rows), 256, 0, stream, slot_out, entry_slot, experts, k, hidden,
                                                                 shared, out);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

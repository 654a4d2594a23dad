// bf16-weight linears on bf16 tensor cores at fp32 accuracy (see gemm_bf16_split.h).
//
// Layout. x fp32 [rows, x_stride] row-major; W bf16 [out, in] row-major, used as stored; y fp32
// [rows, y_stride] row-major.
// Scratch (LinearWorkspace::split_scratch): `terms` bf16 matrices [pass_rows, in] row-major,
// term t (0 = hi, 1 = mid, 2 = lo) at t x term_bytes (256-byte aligned), pass_rows =
// min(rows, kBf16SplitPassRows).
// For cuBLAS (column-major), per pass of n rows, per term t and per K slice [k0, k0 + kc) (the
// whole of K for lo and mid, k_chunk long slices for hi), D = A^T B_t with
//  A = W + k0, [kc x out], lda in ("T"); B_t = term t + k0, [kc x n], ldb in ("N"); C = D = y
//  rows of the pass, [out x n], ldd y_stride; beta 0 for the first GEMM (lo), 1 after.
// The algorithm of each shape (and pointer alignment) is chosen once by cuBLASLt's heuristic
// (host only) and cached.
#include "cuda/gemm_bf16_split.h"

#include <cublasLt.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <tuple>

#include "cuda/blas_lt_plan.h"
#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 4;  // activations per thread of the split kernel

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

size_t term_bytes(int64_t pass_rows, int64_t in) {
  return align256(static_cast<size_t>(pass_rows) * static_cast<size_t>(in) * 2);
}

__device__ __forceinline__ uint16_t bf16_bits(__nv_bfloat16 value) {
  uint16_t bits;
  memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// The terms of x: hi = bf16(x), mid = bf16(x - hi), lo = bf16(x - hi - mid), each rounding to
// nearest even. hi is within a factor 2 of x (same sign), so x - hi is exact (Sterbenz), and so
// is the next residual: the terms add up to x (see the header for the subnormal limit).
template <int TERMS>
__device__ __forceinline__ void split(float x, uint16_t (&terms)[TERMS]) {
  const __nv_bfloat16 hi = __float2bfloat16_rn(x);
  const float hi_f = __bfloat162float(hi);
  terms[0] = bf16_bits(hi);
  const bool finite = isfinite(hi_f);  // else x - hi is NaN: keep hi's inf / NaN alone
  const float r1 = finite ? x - hi_f : 0.0f;
  const __nv_bfloat16 mid = __float2bfloat16_rn(r1);
  terms[1] = bf16_bits(mid);
  if constexpr (TERMS == 3) terms[2] = bf16_bits(__float2bfloat16_rn(r1 - __bfloat162float(mid)));
}

// Block row (blockIdx.y) r, thread i splits activations [4i, 4i + 4) of row r. VECTOR: in % 4
// == 0 and 16-byte aligned rows (one 16-byte load, one 8-byte store per term); else element by
// element. 32-bit index math within a row.
template <int TERMS, bool VECTOR>
__global__ void __launch_bounds__(kThreads)
    split_kernel(const float* x, int64_t x_stride, int in, uint16_t* scratch, int64_t term_elements) {
  const int64_t r = blockIdx.y;
  const int k = (static_cast<int>(blockIdx.x) * kThreads + static_cast<int>(threadIdx.x)) * kPerThread;
  if (k >= in) return;
  const float* source = x + r * x_stride + k;
  uint16_t* target = scratch + r * in + k;
  if constexpr (VECTOR) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(source));
    const float values[4] = {v.x, v.y, v.z, v.w};
    uint16_t terms[4][TERMS];
#pragma unroll
    for (int e = 0; e < 4; ++e) split<TERMS>(values[e], terms[e]);
#pragma unroll
    for (int t = 0; t < TERMS; ++t) {
      const uint2 packed = make_uint2(terms[0][t] | (static_cast<uint32_t>(terms[1][t]) << 16),
                                      terms[2][t] | (static_cast<uint32_t>(terms[3][t]) << 16));
      *reinterpret_cast<uint2*>(target + t * term_elements) = packed;
    }
  } else {
    const int count = min(kPerThread, in - k);
    for (int e = 0; e < count; ++e) {
      uint16_t terms[TERMS];
      split<TERMS>(__ldg(source + e), terms);
#pragma unroll
      for (int t = 0; t < TERMS; ++t) target[t * term_elements + e] = terms[t];
    }
  }
}

using Plan = BlasLtPlan;

// out, rows, K slice, in (lda, ldb), ldd, alignment of W, of the terms and of y (bytes, up to
// 256), workspace bytes, handle.
using PlanKey =
    std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, uint32_t, uint32_t, uint32_t, size_t, void*>;

BlasLtPlanCache<PlanKey>& plan_cache() {
  static BlasLtPlanCache<PlanKey> cache;
  return cache;
}

uint32_t alignment_of(const void* pointer) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  cublasLtMatrixLayout_t layout = nullptr;
  check_blas(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld),
             "cublasLtMatrixLayoutCreate");
  return layout;
}

template <typename T>
void set_preference(cublasLtMatmulPreference_t preference, cublasLtMatmulPreferenceAttributes_t attribute,
                    const T& value) {
  check_blas(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)),
             "cublasLtMatmulPreferenceSetAttribute");
}

// Descriptors of D [m x n] = A^T [m x k] B [k x n] (A and B with leading dimension ldk), bf16 A
// and B, fp32 C = D and accumulation, and the heuristic's algorithm for these alignments (ok
// false if it has none).
const Plan& plan_for(cublasLtHandle_t handle, int64_t m, int64_t n, int64_t k, int64_t ldk, int64_t ldd,
                     uint32_t a_align, uint32_t b_align, uint32_t d_align, size_t workspace_bytes) {
  const PlanKey key{m, n, k, ldk, ldd, a_align, b_align, d_align, workspace_bytes, handle};
  auto found = plan_cache().plans.find(key);
  if (found != plan_cache().plans.end()) return *found->second;
  auto plan = std::make_unique<Plan>();
  check_blas(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const int32_t transpose = CUBLAS_OP_T, no_transpose = CUBLAS_OP_N;
  check_blas(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)),
             "cublasLtMatmulDescSetAttribute");
  check_blas(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &no_transpose, sizeof(no_transpose)),
      "cublasLtMatmulDescSetAttribute");
  plan->a = make_layout(CUDA_R_16BF, k, m, ldk);
  plan->b = make_layout(CUDA_R_16BF, k, n, ldk);
  plan->d = make_layout(CUDA_R_32F, m, n, ldd);
  cublasLtMatmulPreference_t preference = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  set_preference(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(workspace_bytes));
  set_preference(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, a_align);
  set_preference(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, b_align);
  set_preference(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, d_align);
  set_preference(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, d_align);
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->a, plan->b, plan->d,
                                                               plan->d, preference, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(preference);
  plan->ok = status == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS;
  if (plan->ok) {
    plan->algo = result.algo;
  } else {
    std::fprintf(stderr,
                 "bf16 split GEMM: cuBLASLt offers no algorithm for %lld x %lld x %lld; the fp32 kernels run instead\n",
                 static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k));
  }
  return *plan_cache().plans.emplace(key, std::move(plan)).first->second;
}

}  // namespace

size_t bf16_split_scratch_bytes(int64_t rows, int64_t in) {
  const int64_t pass_rows = std::clamp<int64_t>(rows, 0, kBf16SplitPassRows);
  return kBf16SplitTerms * term_bytes(pass_rows, std::max<int64_t>(in, 0));
}

int64_t bf16_split_linear(const LinearView& w, const float* x, int64_t x_stride, int64_t rows, float* y,
                          int64_t y_stride, const LinearWorkspace& workspace, cudaStream_t stream, int terms,
                          int steps, int64_t k_chunk) {
  if (rows <= 0 || w.format != kWeightBF16 || w.out <= 0 || w.in <= 0 || (terms != 2 && terms != 3)) return 0;
  if (k_chunk <= 0 || k_chunk % 8 != 0) return 0;
  if (workspace.blas_handle == nullptr || workspace.blas_workspace == nullptr ||
      workspace.split_scratch == nullptr) {
    return 0;
  }
  if (steps != kBf16SplitAll && rows > kBf16SplitPassRows) return 0;
  if (x_stride < w.in || y_stride < w.out || w.in > (int64_t{1} << 30)) return 0;
  const int64_t pass_rows = std::min(rows, kBf16SplitPassRows);
  const size_t term = term_bytes(pass_rows, w.in);
  if (static_cast<size_t>(terms) * term > workspace.split_scratch_bytes) return 0;

  // Every pass's plan exists before anything is enqueued (a pass's y pointer may be less aligned
  // than the first's).
  auto handle = static_cast<cublasLtHandle_t>(workspace.blas_handle);
  std::lock_guard<std::mutex> lock(plan_cache().mutex);
  // A slice's W and term pointers are 2 x k0 bytes past W's and the term's (256-byte aligned).
  const uint32_t slice_align =
      w.in > k_chunk ? alignment_of(reinterpret_cast<const void*>(static_cast<uintptr_t>(2 * k_chunk))) : 256u;
  const uint32_t a_align = std::min(alignment_of(w.weight), slice_align);
  const auto slice_plan = [&](int64_t row0, int64_t k) -> const Plan& {
    return plan_for(handle, w.out, std::min(pass_rows, rows - row0), k, w.in, y_stride, a_align, slice_align,
                    alignment_of(y + row0 * y_stride), workspace.blas_workspace_bytes);
  };
  if (steps & kBf16SplitMultiply) {
    for (int64_t row0 = 0; row0 < rows; row0 += pass_rows) {
      if (!slice_plan(row0, w.in).ok || !slice_plan(row0, std::min(k_chunk, w.in)).ok) return 0;
      if (w.in % k_chunk != 0 && w.in > k_chunk && !slice_plan(row0, w.in % k_chunk).ok) return 0;
    }
  }

  uint16_t* scratch = static_cast<uint16_t*>(workspace.split_scratch);
  const int64_t term_elements = static_cast<int64_t>(term / 2);
  const bool vector = w.in % 4 == 0 && x_stride % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const float alpha = 1.0f, zero = 0.0f, one = 1.0f;
  for (int64_t row0 = 0; row0 < rows; row0 += pass_rows) {
    const int64_t n = std::min(pass_rows, rows - row0);
    if (steps & kBf16SplitConvert) {
      const dim3 grid(ceil_div_u(w.in, kThreads * kPerThread), static_cast<unsigned>(n));
      const float* xp = x + row0 * x_stride;
      const int in = static_cast<int>(w.in);
      if (terms == 3) {
        if (vector) {
          split_kernel<3, true><<<grid, kThreads, 0, stream>>>(xp, x_stride, in, scratch, term_elements);
        } else {
          split_kernel<3, false><<<grid, kThreads, 0, stream>>>(xp, x_stride, in, scratch, term_elements);
        }
      } else if (vector) {
        split_kernel<2, true><<<grid, kThreads, 0, stream>>>(xp, x_stride, in, scratch, term_elements);
      } else {
        split_kernel<2, false><<<grid, kThreads, 0, stream>>>(xp, x_stride, in, scratch, term_elements);
      }
      LONGCTX_CUDA_CHECK_LAUNCH();
    }
    if (!(steps & kBf16SplitMultiply)) continue;
    float* d = y + row0 * y_stride;
    // Smallest term first; each later GEMM adds its product to y (beta = 1, C = D in place: the
    // epilogue's fp32 add, rounded to nearest). lo and mid over all of K; hi, whose products
    // carry y, in K slices of k_chunk: the tensor cores' own accumulation rounds worse than fp32
    // adds (see the header), and its error grows with the length of the chain.
    for (int t = terms - 1; t >= 0; --t) {
      const uint16_t* b = scratch + t * term_elements;
      const int64_t slice = t == 0 ? k_chunk : w.in;
      for (int64_t k0 = 0; k0 < w.in; k0 += slice) {
        const Plan& p = slice_plan(row0, std::min(slice, w.in - k0));
        const uint16_t* a = reinterpret_cast<const uint16_t*>(w.weight) + k0;
        check_blas(cublasLtMatmul(handle, p.desc, &alpha, a, p.a, b + k0, p.b,
                                  t == terms - 1 && k0 == 0 ? &zero : &one, d, p.d, d, p.d, &p.algo,
                                  workspace.blas_workspace, workspace.blas_workspace_bytes, stream),
                   "cublasLtMatmul");
      }
    }
  }
  return rows;
}

}  // namespace longctx::cuda

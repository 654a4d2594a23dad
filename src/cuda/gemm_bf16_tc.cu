// The grouped wo_a on bf16 tensor cores through cuBLASLt (see gemm_bf16_tc.h for the numerics).
//
// Layout. x fp32 [rows, x_stride] row-major, group g's inputs in columns [g * in, +in); W [out, in]
// e4m3 row-major, group g owning rows [g * per_group, +per_group), e8m0 scales
// [ceil(out / 128), ceil(in / 128)]; y fp32 [rows, y_stride] row-major.
// Scratch (LinearWorkspace::bf16_scratch), each part 256-byte aligned:
//  - wb: the weight as bf16 [out, in] row-major;
//  - xb: one pass of activations as bf16, group-major [groups, pass_rows, in], so that each
//    group's operand is a plain matrix with leading dimension in.
// For cuBLAS (column-major) a pass is one strided-batched D = A^T B over the groups g:
//  A_g = wb + g * per_group * in, [in x per_group], lda in ("T": W row-major);
//  B_g = xb + g * pass_rows * in, [in x pass_rows], ldb in ("N");
//  D_g = y + g * per_group, [per_group x pass_rows], ldd y_stride: the groups' outputs interleave
//  within a row of y but never overlap.
// The algorithm of each shape is chosen once by cuBLASLt's heuristic (host only) and cached.
#include "cuda/gemm_bf16_tc.h"

#include <cublasLt.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
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

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

__device__ __forceinline__ uint32_t bf16_pair(float lo, float hi) {
  // Round to nearest even (NaN stays NaN); lo in the low half: k order in memory.
  const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &pair, sizeof(bits));
  return bits;
}

// Block row (blockIdx.y) o, thread i converts codes [8i, 8i + 8) of W's row o (in % 8 == 0: one
// 128-column scale block) to bf16: one 8-byte load, one 16-byte store. 32-bit index math.
__global__ void __launch_bounds__(kThreads)
    weight_to_bf16_kernel(const uint8_t* weight, const uint8_t* scale, int in, uint16_t* wb) {
  const int o = static_cast<int>(blockIdx.y);
  const int k = (static_cast<int>(blockIdx.x) * kThreads + static_cast<int>(threadIdx.x)) * 8;
  if (k >= in) return;
  const float s = e8m0_to_float(__ldg(scale + (o / 128) * ((in + 127) / 128) + k / 128));
  const int64_t offset = static_cast<int64_t>(o) * in + k;
  const uint2 codes = __ldg(reinterpret_cast<const uint2*>(weight + offset));
  const uint32_t words[2] = {codes.x, codes.y};
  uint32_t packed[4];
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    packed[2 * w] = bf16_pair(fp8_to_float(words[w] & 0xffu) * s, fp8_to_float((words[w] >> 8) & 0xffu) * s);
    packed[2 * w + 1] = bf16_pair(fp8_to_float((words[w] >> 16) & 0xffu) * s, fp8_to_float(words[w] >> 24) * s);
  }
  *reinterpret_cast<uint4*>(wb + offset) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

// Block row (blockIdx.y) r, thread i converts activations [8i, 8i + 8) of row r (two 16-byte
// loads, one 16-byte store) into the group-major bf16 layout. 32-bit index math within a row.
__global__ void __launch_bounds__(kThreads)
    activations_to_bf16_kernel(const float* x, int64_t x_stride, int rows, int in, int x_width, uint16_t* xb) {
  const int r = static_cast<int>(blockIdx.y);
  const int column = (static_cast<int>(blockIdx.x) * kThreads + static_cast<int>(threadIdx.x)) * 8;
  if (column >= x_width) return;
  const int g = column / in;
  const int k = column - g * in;
  const float4* source = reinterpret_cast<const float4*>(x + r * x_stride + column);
  const float4 a = __ldg(source), b = __ldg(source + 1);
  const uint4 packed = make_uint4(bf16_pair(a.x, a.y), bf16_pair(a.z, a.w), bf16_pair(b.x, b.y), bf16_pair(b.z, b.w));
  *reinterpret_cast<uint4*>(xb + (static_cast<int64_t>(g) * rows + r) * in + k) = packed;
}

using Plan = BlasLtPlan;

// m (per group) x n (rows) x k, groups, ldd, workspace bytes, handle.
using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, size_t, void*>;

BlasLtPlanCache<PlanKey>& plan_cache() {
  static BlasLtPlanCache<PlanKey> cache;
  return cache;
}

template <typename T>
void set_layout(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attribute, const T& value) {
  check_blas(cublasLtMatrixLayoutSetAttribute(layout, attribute, &value, sizeof(value)),
             "cublasLtMatrixLayoutSetAttribute");
}

// A layout of `batch` column-major matrices [rows x cols], leading dimension ld, `stride`
// elements apart.
cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  check_blas(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld),
             "cublasLtMatrixLayoutCreate");
  set_layout(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, static_cast<int32_t>(batch));
  set_layout(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride);
  return layout;
}

// Descriptors of D_g [m x n] = A_g^T [m x k] B_g [k x n] for `batch` groups, bf16 A and B, fp32
// D and accumulation, and the heuristic's algorithm (ok false if it has none).
void build_plan(Plan& plan, cublasLtHandle_t handle, int64_t m, int64_t n, int64_t k, int64_t batch, int64_t ldd,
                size_t workspace_bytes) {
  plan.batch = batch;
  check_blas(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const int32_t transpose = CUBLAS_OP_T, no_transpose = CUBLAS_OP_N;
  check_blas(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)),
             "cublasLtMatmulDescSetAttribute");
  check_blas(
      cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &no_transpose, sizeof(no_transpose)),
      "cublasLtMatmulDescSetAttribute");
  plan.a = make_layout(CUDA_R_16BF, k, m, k, batch, m * k);
  plan.b = make_layout(CUDA_R_16BF, k, n, k, batch, n * k);
  plan.d = make_layout(CUDA_R_32F, m, n, ldd, batch, m);
  cublasLtMatmulPreference_t preference = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  const uint64_t max_workspace = workspace_bytes;
  check_blas(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                                  sizeof(max_workspace)),
             "cublasLtMatmulPreferenceSetAttribute");
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle, plan.desc, plan.a, plan.b, plan.d, plan.d,
                                                               preference, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(preference);
  plan.ok = status == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS;
  if (plan.ok) plan.algo = result.algo;
}

// The plan of `groups` groups of D_g = A_g^T B_g (caller holds the cache mutex): one batched GEMM, or,
// if cuBLASLt has no batched algorithm (the groups' D interleave in y), one GEMM per group.
const Plan& plan_for(cublasLtHandle_t handle, int64_t m, int64_t n, int64_t k, int64_t groups, int64_t ldd,
                     size_t workspace_bytes) {
  const PlanKey key{m, n, k, groups, ldd, workspace_bytes, handle};
  auto found = plan_cache().plans.find(key);
  if (found != plan_cache().plans.end()) return *found->second;
  auto plan = std::make_unique<Plan>();
  build_plan(*plan, handle, m, n, k, groups, ldd, workspace_bytes);
  if (!plan->ok && groups > 1) {
    plan = std::make_unique<Plan>();
    build_plan(*plan, handle, m, n, k, 1, ldd, workspace_bytes);
    std::fprintf(stderr, "bf16 tensor-core GEMM: no batched algorithm for %lld groups of %lld x %lld x %lld%s\n",
                 static_cast<long long>(groups), static_cast<long long>(m), static_cast<long long>(n),
                 static_cast<long long>(k), plan->ok ? ": one GEMM per group" : "");
  }
  if (!plan->ok) {
    std::fprintf(stderr,
                 "bf16 tensor-core GEMM: cuBLASLt offers no algorithm for %lld x %lld x %lld; the fp32 kernels run "
                 "instead\n",
                 static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k));
  }
  return *plan_cache().plans.emplace(key, std::move(plan)).first->second;
}

bool aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

}  // namespace

size_t bf16_tc_scratch_bytes(int64_t out, int64_t in, int64_t rows, int64_t x_width) {
  const size_t weights = static_cast<size_t>(std::max<int64_t>(out, 0)) * static_cast<size_t>(std::max<int64_t>(in, 0));
  const size_t pass_rows = static_cast<size_t>(std::clamp<int64_t>(rows, 0, kBf16TcPassRows));
  return align256(weights * 2) + align256(pass_rows * static_cast<size_t>(std::max<int64_t>(x_width, 0)) * 2);
}

int64_t bf16_tc_linear(const LinearView& w, const float* x, int64_t x_stride, int64_t rows, float* y,
                       int64_t y_stride, int64_t x_group_outputs, const LinearWorkspace& workspace,
                       cudaStream_t stream, int steps) {
  if (rows <= 0 || w.format != kWeightFP8 || w.scale == nullptr || w.out <= 0 || w.in <= 0) return 0;
  if (workspace.blas_handle == nullptr || workspace.blas_workspace == nullptr || workspace.bf16_scratch == nullptr) {
    return 0;
  }
  if (steps != kBf16TcAll && rows > kBf16TcPassRows) return 0;
  const int64_t per_group = x_group_outputs > 0 ? x_group_outputs : w.out;
  if (w.out % per_group != 0 || per_group % 8 != 0 || w.in % 8 != 0) return 0;
  const int64_t groups = w.out / per_group;
  const int64_t x_width = groups * w.in;
  if (!aligned16(x) || x_stride % 4 != 0 || x_stride < x_width) return 0;
  if (!aligned16(y) || y_stride % 4 != 0 || y_stride < w.out || !aligned16(w.weight)) return 0;
  if (bf16_tc_scratch_bytes(w.out, w.in, rows, x_width) > workspace.bf16_scratch_bytes) return 0;
  // Grid rows: one per weight row, one per activation row of a pass (<= kBf16TcPassRows).
  if (w.out > 65535 || x_width > (int64_t{1} << 30)) return 0;

  uint8_t* scratch = static_cast<uint8_t*>(workspace.bf16_scratch);
  uint16_t* wb = reinterpret_cast<uint16_t*>(scratch);
  uint16_t* xb = reinterpret_cast<uint16_t*>(scratch + align256(static_cast<size_t>(w.out * w.in) * 2));
  const int64_t pass_rows = std::min(rows, kBf16TcPassRows);

  auto handle = static_cast<cublasLtHandle_t>(workspace.blas_handle);
  std::lock_guard<std::mutex> lock(plan_cache().mutex);
  const Plan& plan = plan_for(handle, per_group, pass_rows, w.in, groups, y_stride, workspace.blas_workspace_bytes);
  if (!plan.ok) return 0;
  const int64_t last_rows = rows % pass_rows;
  if (last_rows != 0 &&
      !plan_for(handle, per_group, last_rows, w.in, groups, y_stride, workspace.blas_workspace_bytes).ok) {
    return 0;
  }

  if (steps & kBf16TcConvert) {
    const dim3 grid(ceil_div_u(w.in / 8, kThreads), static_cast<unsigned>(w.out));
    weight_to_bf16_kernel<<<grid, kThreads, 0, stream>>>(w.weight, w.scale, static_cast<int>(w.in), wb);
    LONGCTX_CUDA_CHECK_LAUNCH();
  }
  const float alpha = 1.0f, beta = 0.0f;
  for (int64_t row0 = 0; row0 < rows; row0 += pass_rows) {
    const int64_t n = std::min(pass_rows, rows - row0);
    if (steps & kBf16TcConvert) {
      const dim3 grid(ceil_div_u(x_width / 8, kThreads), static_cast<unsigned>(n));
      activations_to_bf16_kernel<<<grid, kThreads, 0, stream>>>(x + row0 * x_stride, x_stride, static_cast<int>(n),
                                                                static_cast<int>(w.in), static_cast<int>(x_width), xb);
      LONGCTX_CUDA_CHECK_LAUNCH();
    }
    if (!(steps & kBf16TcMultiply)) continue;
    const Plan& p = n == pass_rows ? plan
                                   : plan_for(handle, per_group, n, w.in, groups, y_stride,
                                              workspace.blas_workspace_bytes);
    for (int64_t g = 0; g < groups; g += p.batch) {
      const uint16_t* a = wb + g * per_group * w.in;
      const uint16_t* b = xb + g * n * w.in;
      float* d = y + row0 * y_stride + g * per_group;
      check_blas(cublasLtMatmul(handle, p.desc, &alpha, a, p.a, b, p.b, &beta, d, p.d, d, p.d, &p.algo,
                                workspace.blas_workspace, workspace.blas_workspace_bytes, stream),
                 "cublasLtMatmul");
    }
  }
  return rows;
}

}  // namespace longctx::cuda

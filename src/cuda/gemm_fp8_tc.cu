// fp8 linears on the tensor cores through cuBLASLt (see gemm_fp8_tc.h for the numerics).
//
// Layout. y [rows, out] fp32 row-major is, for cuBLAS (column-major), D = A B with D [out x rows]
// (ld y_stride), A = W^T as stored (W [out, in] e4m3 row-major: "TN", the only fp8 form Hopper
// takes) and B = the quantized activations [in x rows] (codes [rows, x_width] row-major, ld
// x_width). Scales, fp32, in the layouts cuBLASLt reads:
//  - weights, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F: one per 128x128 block,
//    [out / 128, in / 128] row-major (the stored e8m0 layout, converted to fp32 per call);
//  - activations, CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F: one per (row, 128-column block),
//    block-major: scale of row r, block b at b * rows + r.
// The grouped wo_a (output o reads x columns [(o / x_group_outputs) * in, +in)) is one GEMM per
// group: group g uses weight rows [g * per_group, +per_group), activation columns [g * in, +in)
// (codes + g * in, scales + g * (in / 128) * rows) and y columns [g * per_group, +per_group).
//
// Scratch (LinearWorkspace::fp8_scratch), each part 256-byte aligned: the weight scales (up to
// kWeightScaleFloats floats), the activation scales (rows * x_width / 128 floats), the codes
// (rows * x_width bytes). One kernel quantizes the activations and converts the weight scales;
// then one cublasLtMatmul per group. The algorithm of each problem shape is chosen once by
// cuBLASLt's heuristic (host only) and cached.
//
// Activations quantized once (Fp8Activations, kernels.h; fp8_activation.cuh): the same GEMM
// (the same plan, so the same algorithm and bits) on codes and scales made by the caller's one
// pass; only the weight scales are converted per call, into the scratch's first part.
#include "cuda/gemm_fp8_tc.h"

#include <cublasLt.h>

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
#include "cuda/fp8_activation.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int64_t kBlock = 128;
constexpr int64_t kWeightScaleFloats = int64_t{1} << 18;  // 1 MiB: weights up to ~2^32 codes
constexpr int kQuantThreads = 256;

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Warps [0, rows * width / 128) each quantize one (row, 128-column block): lane l holds columns
// 4l..4l+3 (one 16-byte load, one 4-byte store of codes). The scale is the power of two of
// fp8_simulate_rows, so activations that went through it quantize exactly. Blocks from
// act_blocks on convert the weight's e8m0 scales to fp32 instead.
__global__ void __launch_bounds__(kQuantThreads)
    quantize_kernel(const float* x, int64_t rows, int64_t width, int64_t x_stride, uint8_t* codes,
                    float* scales, int64_t act_blocks, const uint8_t* weight_scale_bytes,
                    int64_t weight_scales, float* weight_scale_floats) {
  if (static_cast<int64_t>(blockIdx.x) >= act_blocks) {
    const int64_t i = (static_cast<int64_t>(blockIdx.x) - act_blocks) * kQuantThreads + threadIdx.x;
    if (i < weight_scales) weight_scale_floats[i] = e8m0_to_float(weight_scale_bytes[i]);
    return;
  }
  const int64_t blocks_per_row = width / kBlock;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * (kQuantThreads / 32) + threadIdx.x / 32;
  if (index >= rows * blocks_per_row) return;
  const int64_t r = index / blocks_per_row;
  const int64_t b = index % blocks_per_row;
  const int lane = static_cast<int>(threadIdx.x & 31);
  const float4 v = *reinterpret_cast<const float4*>(x + r * x_stride + b * kBlock + 4 * lane);
  const float amax = warp_max(fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
  const float scale = fp8_scale_from_amax(amax);
  const float values[4] = {v.x, v.y, v.z, v.w};
  uint32_t packed = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    packed |= static_cast<uint32_t>(float_to_fp8(fminf(fmaxf(values[i] / scale, -448.0f), 448.0f))) << (8 * i);
  }
  *reinterpret_cast<uint32_t*>(codes + r * width + b * kBlock + 4 * lane) = packed;
  if (lane == 0) scales[b * rows + r] = scale;
}

// Warps [0, rows * width / 128) each make one (row, 128-column block) of the view from x (and
// the simulated copy when asked); see fp8_activation.cuh.
__global__ void __launch_bounds__(kQuantThreads)
    quantize_activations_kernel(const float* x, int64_t x_stride, Fp8Activations a, float* simulated,
                                int64_t simulated_stride) {
  const int64_t blocks_per_row = a.width / kBlock;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * (kQuantThreads / 32) + threadIdx.x / 32;
  if (index >= a.rows * blocks_per_row) return;
  const int64_t r = index / blocks_per_row;
  const int64_t b = index % blocks_per_row;
  const int lane = static_cast<int>(threadIdx.x & 31);
  const float4 loaded = *reinterpret_cast<const float4*>(x + r * x_stride + b * kBlock + 4 * lane);
  float v[4] = {loaded.x, loaded.y, loaded.z, loaded.w};
  uint32_t packed = 0;
  const float scale = fp8_quantize_block(v, &packed);
  if (simulated != nullptr) {
    *reinterpret_cast<float4*>(simulated + r * simulated_stride + b * kBlock + 4 * lane) =
        make_float4(v[0], v[1], v[2], v[3]);
    if (r >= a.tc_rows) return;  // the tail is the simulated copy's rows
  }
  fp8_store_block(a, r, b, lane, v, packed, scale);
}

__global__ void weight_scales_kernel(const uint8_t* bytes, int64_t count, float* floats) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kQuantThreads + threadIdx.x;
  if (i < count) floats[i] = e8m0_to_float(bytes[i]);
}

using Plan = BlasLtPlan;

// m x n x k, lda, ldb, ldd, workspace bytes, handle.
using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, size_t, void*>;

BlasLtPlanCache<PlanKey>& plan_cache() {
  static BlasLtPlanCache<PlanKey> cache;
  return cache;
}

template <typename T>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value) {
  check_blas(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)), "cublasLtMatmulDescSetAttribute");
}

// The plan of D [m x n] = A^T [m x k] B [k x n] with block-scaled e4m3 A and B and fp32 D
// (caller holds the cache mutex). The scale pointers are set per call.
const Plan& plan_for(cublasLtHandle_t handle, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                     int64_t ldd, size_t workspace_bytes, const float* a_scale, const float* b_scale) {
  const PlanKey key{m, n, k, lda, ldb, ldd, workspace_bytes, handle};
  auto found = plan_cache().plans.find(key);
  if (found != plan_cache().plans.end()) return *found->second;
  auto plan = std::make_unique<Plan>();
  check_blas(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, static_cast<int32_t>(CUBLAS_OP_T));
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, static_cast<int32_t>(CUBLAS_OP_N));
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
                static_cast<int32_t>(CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F));
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, static_cast<int32_t>(CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F));
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, a_scale);
  set_attribute(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, b_scale);
  check_blas(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_8F_E4M3, static_cast<uint64_t>(k), static_cast<uint64_t>(m), lda),
             "cublasLtMatrixLayoutCreate(A)");
  check_blas(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_8F_E4M3, static_cast<uint64_t>(k), static_cast<uint64_t>(n), ldb),
             "cublasLtMatrixLayoutCreate(B)");
  check_blas(cublasLtMatrixLayoutCreate(&plan->d, CUDA_R_32F, static_cast<uint64_t>(m), static_cast<uint64_t>(n), ldd),
             "cublasLtMatrixLayoutCreate(D)");
  cublasLtMatmulPreference_t preference = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  const uint64_t max_workspace = workspace_bytes;
  check_blas(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                                  sizeof(max_workspace)),
             "cublasLtMatmulPreferenceSetAttribute");
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->a, plan->b, plan->d, plan->d,
                                                               preference, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(preference);
  plan->ok = status == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS;
  if (plan->ok) {
    plan->algo = result.algo;
  } else {
    std::fprintf(stderr,
                 "fp8 tensor-core GEMM: cuBLASLt offers no algorithm for %lld x %lld x %lld (status %d, %d "
                 "results); the fp32 kernels run instead\n",
                 static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                 static_cast<int>(status), returned);
  }
  return *plan_cache().plans.emplace(key, std::move(plan)).first->second;
}

bool aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

}  // namespace

BlasLtHandle::BlasLtHandle() {
  cublasLtHandle_t handle = nullptr;
  check_blas(cublasLtCreate(&handle), "cublasLtCreate");
  handle_ = handle;
}

BlasLtHandle::~BlasLtHandle() {
  if (handle_ != nullptr) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

size_t fp8_tc_scratch_bytes(int64_t rows, int64_t x_width) {
  const size_t r = static_cast<size_t>(std::max<int64_t>(rows, 0));
  const size_t width = static_cast<size_t>(std::max<int64_t>(x_width, 0));
  return align256(static_cast<size_t>(kWeightScaleFloats) * sizeof(float)) +
         align256(r * (width / kBlock) * sizeof(float)) + align256(r * width);
}

namespace {

// What a call needs besides the activations, when it qualifies (see fp8_tc_linear in the header).
struct Fp8Call {
  int64_t per_group = 0, groups = 0, x_width = 0, k_blocks = 0, weight_scales = 0;
  float* weight_scale = nullptr;  // scratch, the converted weight scales
};

bool weight_qualifies(const LinearView& w, int64_t x_group_outputs, const LinearWorkspace& workspace, Fp8Call* call) {
  if (w.format != kWeightFP8 || w.scale == nullptr || w.out <= 0) return false;
  if (workspace.blas_handle == nullptr || workspace.blas_workspace == nullptr || workspace.fp8_scratch == nullptr) {
    return false;
  }
  // 128x128 weight-scale rows of in / 128 floats: cuBLASLt wants their stride 16-byte aligned.
  if (w.in % (4 * kBlock) != 0) return false;
  call->per_group = x_group_outputs > 0 ? x_group_outputs : w.out;
  if (x_group_outputs > 0 && (w.out % x_group_outputs != 0 || x_group_outputs % kBlock != 0)) return false;
  if (call->per_group % 16 != 0 || !aligned16(w.weight)) return false;
  call->groups = w.out / call->per_group;
  call->x_width = call->groups * w.in;
  call->k_blocks = w.in / kBlock;
  call->weight_scales = (w.out + kBlock - 1) / kBlock * call->k_blocks;
  if (call->weight_scales > kWeightScaleFloats) return false;
  call->weight_scale = static_cast<float*>(workspace.fp8_scratch);
  return true;
}

// Enqueues the GEMM of each group on codes [rows, x_width] with block-major scales act_scale
// (the caller holds the cache mutex, has the plan and has converted the weight scales).
void multiply(const Plan& plan, const LinearView& w, const Fp8Call& call, const uint8_t* codes, const float* act_scale,
              int64_t rows, float* y, const LinearWorkspace& workspace, cudaStream_t stream) {
  auto handle = static_cast<cublasLtHandle_t>(workspace.blas_handle);
  const float alpha = 1.0f, beta = 0.0f;
  for (int64_t g = 0; g < call.groups; ++g) {
    const float* a_scale = call.weight_scale + g * (call.per_group / kBlock) * call.k_blocks;
    const float* b_scale = act_scale + g * call.k_blocks * rows;
    set_attribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, a_scale);
    set_attribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, b_scale);
    const uint8_t* a = w.weight + g * call.per_group * w.in;
    const uint8_t* b = codes + g * w.in;
    float* d = y + g * call.per_group;
    check_blas(cublasLtMatmul(handle, plan.desc, &alpha, a, plan.a, b, plan.b, &beta, d, plan.d, d, plan.d, &plan.algo,
                              workspace.blas_workspace, workspace.blas_workspace_bytes, stream),
               "cublasLtMatmul");
  }
}

}  // namespace

int64_t fp8_tc_linear(const LinearView& w, const float* x, int64_t x_stride, int64_t all_rows, float* y,
                      int64_t y_stride, int64_t x_group_outputs, const LinearWorkspace& workspace,
                      cudaStream_t stream, int steps) {
  // The activation scales of a row block are a vector of `rows` floats that cuBLASLt wants
  // 16-byte aligned (it offers no algorithm for 777 rows, one for 300).
  const int64_t rows = all_rows / 4 * 4;
  Fp8Call call;
  if (rows <= 0 || !weight_qualifies(w, x_group_outputs, workspace, &call)) return 0;
  if (!aligned16(x) || x_stride % 4 != 0 || x_stride < call.x_width) return 0;
  if (!aligned16(y) || y_stride % 4 != 0 || y_stride < w.out) return 0;
  if (fp8_tc_scratch_bytes(rows, call.x_width) > workspace.fp8_scratch_bytes) return 0;

  uint8_t* scratch = static_cast<uint8_t*>(workspace.fp8_scratch);
  scratch += align256(static_cast<size_t>(kWeightScaleFloats) * sizeof(float));
  float* act_scale = reinterpret_cast<float*>(scratch);
  scratch += align256(static_cast<size_t>(rows) * static_cast<size_t>(call.x_width / kBlock) * sizeof(float));
  uint8_t* codes = scratch;

  auto handle = static_cast<cublasLtHandle_t>(workspace.blas_handle);
  std::lock_guard<std::mutex> lock(plan_cache().mutex);
  const Plan& plan = plan_for(handle, call.per_group, rows, w.in, w.in, call.x_width, y_stride,
                              workspace.blas_workspace_bytes, call.weight_scale, act_scale);
  if (!plan.ok) return 0;

  if (steps & kFp8TcQuantize) {
    const int64_t warps = rows * (call.x_width / kBlock);
    const int64_t act_blocks = (warps + kQuantThreads / 32 - 1) / (kQuantThreads / 32);
    const int64_t scale_blocks = (call.weight_scales + kQuantThreads - 1) / kQuantThreads;
    quantize_kernel<<<static_cast<unsigned>(act_blocks + scale_blocks), kQuantThreads, 0, stream>>>(
        x, rows, call.x_width, x_stride, codes, act_scale, act_blocks, w.scale, call.weight_scales, call.weight_scale);
    LONGCTX_CUDA_CHECK_LAUNCH();
  }
  if (!(steps & kFp8TcMultiply)) return rows;
  multiply(plan, w, call, codes, act_scale, rows, y, workspace, stream);
  return rows;
}

size_t fp8_activation_bytes(int64_t rows, int64_t width) {
  const size_t r = static_cast<size_t>(std::max<int64_t>(rows, 0));
  const size_t tc = r / 4 * 4;
  const size_t n = static_cast<size_t>(std::max<int64_t>(width, 0));
  return align256(tc * n) + align256(tc * (n / kBlock) * sizeof(float)) + (r - tc) * n * sizeof(float);
}

Fp8Activations fp8_activations_in(void* buffer, int64_t rows, int64_t width) {
  Fp8Activations a;
  a.rows = rows;
  a.tc_rows = rows / 4 * 4;
  a.width = width;
  uint8_t* p = static_cast<uint8_t*>(buffer);
  a.codes = p;
  p += align256(static_cast<size_t>(a.tc_rows * width));
  a.scales = reinterpret_cast<float*>(p);
  p += align256(static_cast<size_t>(a.tc_rows * (width / kBlock)) * sizeof(float));
  a.tail = reinterpret_cast<float*>(p);
  a.tail_stride = width;
  return a;
}

Fp8Activations fp8_quantize_activations(const float* x, int64_t x_stride, int64_t rows, int64_t width, void* buffer,
                                        cudaStream_t stream, float* simulated, int64_t simulated_stride) {
  if (width % kBlock != 0) fail("fp8 activations: row length ", width, " is not a multiple of 128");
  if (!aligned16(x) || x_stride % 4 != 0 || !aligned16(buffer) ||
      (simulated != nullptr && (!aligned16(simulated) || simulated_stride % 4 != 0))) {
    fail("fp8 activations: rows must be 16-byte aligned");
  }
  Fp8Activations a = fp8_activations_in(buffer, rows, width);
  if (simulated != nullptr) {
    a.tail = simulated + a.tc_rows * simulated_stride;
    a.tail_stride = simulated_stride;
  }
  const int64_t warps = rows * (width / kBlock);
  if (warps <= 0) return a;
  const int64_t blocks = (warps + kQuantThreads / 32 - 1) / (kQuantThreads / 32);
  quantize_activations_kernel<<<static_cast<unsigned>(blocks), kQuantThreads, 0, stream>>>(x, x_stride, a, simulated,
                                                                                           simulated_stride);
  LONGCTX_CUDA_CHECK_LAUNCH();
  return a;
}

bool fp8_tc_supported(const LinearView& w, int64_t rows, const LinearWorkspace& workspace) {
  const int64_t tc_rows = rows / 4 * 4;
  Fp8Call call;
  if (tc_rows <= 0 || !weight_qualifies(w, 0, workspace, &call)) return false;
  if (fp8_tc_scratch_bytes(0, 0) > workspace.fp8_scratch_bytes) return false;
  // y rows of w.out floats (linear_fp8's callers' layout); the scale pointers are set per call.
  std::lock_guard<std::mutex> lock(plan_cache().mutex);
  const float* scales = call.weight_scale;
  return plan_for(static_cast<cublasLtHandle_t>(workspace.blas_handle), call.per_group, tc_rows, w.in, w.in, w.in,
                  w.out, workspace.blas_workspace_bytes, scales, scales)
      .ok;
}

int64_t fp8_tc_multiply(const LinearView& w, const Fp8Activations& x, float* y, int64_t y_stride,
                        const LinearWorkspace& workspace, cudaStream_t stream) {
  Fp8Call call;
  if (x.tc_rows <= 0 || !weight_qualifies(w, 0, workspace, &call) || x.width != w.in) return 0;
  if (!aligned16(y) || y_stride % 4 != 0 || y_stride < w.out || !aligned16(x.codes) || !aligned16(x.scales)) return 0;
  if (fp8_tc_scratch_bytes(0, 0) > workspace.fp8_scratch_bytes) return 0;
  auto handle = static_cast<cublasLtHandle_t>(workspace.blas_handle);
  std::lock_guard<std::mutex> lock(plan_cache().mutex);
  const Plan& plan = plan_for(handle, call.per_group, x.tc_rows, w.in, w.in, w.in, y_stride,
                              workspace.blas_workspace_bytes, call.weight_scale, x.scales);
  if (!plan.ok) return 0;
  weight_scales_kernel<<<static_cast<unsigned>((call.weight_scales + kQuantThreads - 1) / kQuantThreads), kQuantThreads,
                         0, stream>>>(w.scale, call.weight_scales, call.weight_scale);
  LONGCTX_CUDA_CHECK_LAUNCH();
  multiply(plan, w, call, x.codes, x.scales, x.tc_rows, y, workspace, stream);
  return x.tc_rows;
}

}  // namespace longctx::cuda

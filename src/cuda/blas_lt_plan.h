// cuBLASLt pieces shared by the tensor-core GEMM paths (gemm_fp8_tc.cu, gemm_bf16_tc.cu): the
// status check and the descriptors of one problem shape with their chosen algorithm (RAII).
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "longctx/error.h"

namespace longctx::cuda {

inline void check_blas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt error in ", what, ": status ", static_cast<int>(status));
}

struct BlasLtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
  int64_t batch = 1;  // groups per cublasLtMatmul (the bf16 path's batched groups)

  BlasLtPlan() = default;
  BlasLtPlan(const BlasLtPlan&) = delete;
  BlasLtPlan& operator=(const BlasLtPlan&) = delete;
  ~BlasLtPlan() {
    if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

// Plans by problem shape, chosen once on the host (the heuristic is slow) and kept for the
// process. Callers hold mutex() while they find or add a plan and use it.
template <typename Key>
struct BlasLtPlanCache {
  std::mutex mutex;
  std::map<Key, std::unique_ptr<BlasLtPlan>> plans;
};

}  // namespace longctx::cuda

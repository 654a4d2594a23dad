// Programmatic dependent launch (PDL, sm_90): a kernel launched with launch_dependent() may be
// scheduled while the previous kernel on its stream drains, so a decode step's ~2,800 small
// kernels stop paying launch latency and ramp-up one after another. The contract, for every
// kernel launched this way: call wait_for_previous_kernels() before it reads anything an earlier
// kernel writes and before it writes anything (an earlier kernel may still read it); only data
// no kernel writes (weights) may be touched before. Because every such kernel waits for the
// full completion of its predecessor, which waited for its own, completion stays transitive
// along the stream. allow_next_kernel() lets the next kernel's blocks be scheduled (they then
// sit in their own wait): called right after the wait, so at most one kernel runs ahead.
// Stream capture turns these launches into programmatic graph edges, so decode graphs keep them.
// LONGCTX_CUDA_PDL=0 launches plainly (A/B runs); the device calls are then no-ops.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <string>
#include <utility>

#include "cuda/cuda_check.h"

namespace longctx::cuda {

__device__ __forceinline__ void wait_for_previous_kernels() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
}
__device__ __forceinline__ void allow_next_kernel() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
// The usual prologue: wait, then let the next kernel be scheduled.
__device__ __forceinline__ void begin_dependent_kernel() {
  wait_for_previous_kernels();
  allow_next_kernel();
}

inline bool dependent_launch_enabled() {
  static const bool enabled = [] {
    const char* text = std::getenv("LONGCTX_CUDA_PDL");
    return text == nullptr || std::string(text) != "0";
  }();
  return enabled;
}

// cudaLaunchConfig_t for a dependent launch of `grid` x `block` with `shared` dynamic bytes.
struct DependentLaunch {
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute attribute{};
  DependentLaunch(dim3 grid, dim3 block, size_t shared, cudaStream_t stream) {
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared;
    config.stream = stream;
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    config.attrs = &attribute;
    config.numAttrs = dependent_launch_enabled() ? 1 : 0;
  }
  DependentLaunch(const DependentLaunch&) = delete;
  DependentLaunch& operator=(const DependentLaunch&) = delete;
};

// kernel<<<grid, block, shared, stream>>>(args...) as a dependent launch; checks the launch.
template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared, cudaStream_t stream,
                      Args&&... args) {
  DependentLaunch launch(grid, block, shared, stream);
  LONGCTX_CUDA_CHECK(cudaLaunchKernelEx(&launch.config, kernel, std::forward<Args>(args)...));
}

// The same for a kernel chosen at run time, with its argument pointers.
inline void launch_dependent(const void* kernel, dim3 grid, dim3 block, size_t shared, cudaStream_t stream,
                             void** args) {
  DependentLaunch launch(grid, block, shared, stream);
  LONGCTX_CUDA_CHECK(cudaLaunchKernelExC(&launch.config, kernel, args));
}

}  // namespace longctx::cuda

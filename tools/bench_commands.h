// The modes of `longctx bench`: each lives in its own bench_*.cpp and takes the arguments after
// the mode name (`longctx bench serve --url ...` passes {"--url", ...}).
#pragma once

#include <string>
#include <vector>

namespace longctx::cli {

// What `bench kernels` and `bench e2e` say in a build without the CUDA backend.
inline constexpr const char* kNoCudaBackend =
    "this build of longctx has no CUDA backend (configure with -DLONGCTX_CUDA=ON where nvcc is "
    "installed)";

// A client that drives a running OpenAI-compatible server, as `vllm bench serve` does.
int bench_serve(const std::vector<std::string>& argv);
// Hot kernels against the device's roofline.
int bench_kernels(const std::vector<std::string>& argv);
// The whole forward on random weights in the released formats: prefill and decode at a context.
int bench_e2e(const std::vector<std::string>& argv);

}  // namespace longctx::cli

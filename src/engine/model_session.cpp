#include "engine/model_session.h"

#include "cpu/cpu_backend.h"
#include "longctx/error.h"
#ifdef LONGCTX_HAS_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace longctx {

std::unique_ptr<Backend> make_backend(const std::string& device, const ModelWeights& weights,
                                      const KvLayout& layout, const KvPoolSizes& sizes,
                                      const BackendOptions& options) {
  if (device == "cpu") return std::make_unique<CpuBackend>(weights, layout, sizes);
#ifdef LONGCTX_HAS_CUDA
  CudaOptions cuda;
  cuda.batch_invariant = options.batch_invariant;
  if (device == "cuda") return std::make_unique<CudaBackend>(weights, layout, sizes, cuda);
#else
  (void)options;
  if (device == "cuda") fail("this build of longctx has no CUDA backend");
#endif
  fail("unknown device '", device, "' (expected cpu or cuda)");
}

ModelSession::ModelSession(std::shared_ptr<const LoadedModel> model, const SessionOptions& options)
    : model_(std::move(model)), layout_(make_kv_layout(model_->config(), options.kv)) {
  if (options.max_tokens < 1 || options.max_sequences < 1) fail("session: sizes must be positive");
  KvPoolSizes sizes;
  if (options.kv_cache_bytes > 0) {
    sizes = pool_sizes_for_memory(layout_, options.kv_cache_bytes, options.max_sequences,
                                  options.max_batched_tokens, options.enable_prefix_caching);
  } else {
    const int64_t blocks_per_sequence = (options.max_tokens + kKvBlockSize - 1) / kKvBlockSize;
    sizes = pool_sizes_for_blocks(
        layout_, static_cast<int32_t>(blocks_per_sequence * options.max_sequences + options.max_sequences),
        static_cast<int32_t>(options.max_sequences));
  }
  kv_ = std::make_unique<KvCacheManager>(layout_, sizes, options.enable_prefix_caching);
  backend_ = make_backend(options.device, model_->weights(), layout_, sizes,
                          BackendOptions{options.batch_invariant});
}

}  // namespace longctx

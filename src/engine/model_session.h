// A loaded model with its KV cache and a backend: what the single-sequence CLI commands and
// the engine run on.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "kv/kv_cache_manager.h"
#include "model/model_weights.h"

namespace longctx {

struct SessionOptions {
  std::string device = "cpu";
  KvCacheOptions kv;
  // The KV pools hold this many logical blocks (of 256 positions) for this many sequences,
  // unless kv_cache_bytes sizes them from memory.
  int64_t max_tokens = 4096;
  int64_t max_sequences = 1;
  size_t kv_cache_bytes = 0;
  int64_t max_batched_tokens = 2048;  // with kv_cache_bytes: room for one step's new blocks
  bool enable_prefix_caching = false;
  bool batch_invariant = false;
};

class ModelSession {
 public:
  ModelSession(std::shared_ptr<const LoadedModel> model, const SessionOptions& options);

  const ModelConfig& config() const { return model_->config(); }
  const LoadedModel& model() const { return *model_; }
  Backend& backend() { return *backend_; }
  KvCacheManager& kv() { return *kv_; }
  const KvLayout& layout() const { return layout_; }

 private:
  std::shared_ptr<const LoadedModel> model_;
  KvLayout layout_;
  std::unique_ptr<KvCacheManager> kv_;
  std::unique_ptr<Backend> backend_;
};

// Creates the backend named `device` ("cpu"; "cuda" when built with CUDA).
struct BackendOptions {
  bool batch_invariant = false;  // the CPU backend is invariant by construction
};
std::unique_ptr<Backend> make_backend(const std::string& device, const ModelWeights& weights,
                                      const KvLayout& layout, const KvPoolSizes& sizes,
                                      const BackendOptions& options = {});

}  // namespace longctx

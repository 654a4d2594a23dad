#include "model_options.h"

namespace longctx::cli {

SessionOptions session_options(const Args& args, int64_t max_tokens) {
  SessionOptions options;
  options.device = args.get_or("device", "cpu");
  // The CPU reference keeps the cache exact by default; the GPU stores what the reference does.
  const std::string default_kv = options.device == "cpu" ? "fp32" : "bf16";
  const std::string kv_dtype = args.get_or("kv-cache-dtype", "auto");
  options.kv.kv_dtype = parse_kv_dtype(kv_dtype == "auto" ? default_kv : kv_dtype);
  const std::string index_dtype = args.get_or("indexer-dtype", "auto");
  options.kv.indexer_dtype = parse_indexer_key_dtype(index_dtype == "auto" ? default_kv : index_dtype);
  options.max_tokens = max_tokens;
  options.batch_invariant = args.has("batch-invariant");
  return options;
}

std::shared_ptr<const LoadedModel> load_model(const Args& args) {
  return std::make_shared<const LoadedModel>(args.require("model"));
}

}  // namespace longctx::cli

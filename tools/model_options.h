// Flags shared by the commands that run a model: --model, --device, --kv-cache-dtype,
// --indexer-dtype, --batch-invariant (a switch: pass it in Args' switches).
#pragma once

#include <memory>
#include <set>
#include <string>

#include "args.h"
#include "engine/model_session.h"
#include "model/model_weights.h"

namespace longctx::cli {

inline const std::set<std::string> kModelFlags = {"model", "device", "kv-cache-dtype", "indexer-dtype",
                                                  "batch-invariant"};

// Session options from the flags; `max_tokens` sizes the KV pools.
SessionOptions session_options(const Args& args, int64_t max_tokens);
// Loads --model (printing nothing).
std::shared_ptr<const LoadedModel> load_model(const Args& args);

}  // namespace longctx::cli

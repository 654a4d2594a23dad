// A tiny random-weight V4 checkpoint written once per test process into a temporary folder.
#pragma once

#include <string>

#include "longctx/model_config.h"

namespace longctx::testing {

// The folder of the default tiny test model (seed 0), written on first use.
const std::string& tiny_model_dir();

// Writes a test model with `config` and `seed` into a fresh temporary folder, once per
// distinct (name) within the process, and returns the folder.
std::string test_model_dir(const std::string& name, const ModelConfig& config, uint64_t seed);

}  // namespace longctx::testing

#include <functional>
#include <vector>

#include "model/safetensors.h"

namespace longctx::testing {

// Rewrites tensor `name` (as stored) of the checkpoint in `dir`: `edit` may change the bytes
// in place (same dtype and shape).
void rewrite_tensor(const std::string& dir, const std::string& name,
                    const std::function<void(std::vector<uint8_t>& bytes, const TensorInfo& info)>& edit);

}  // namespace longctx::testing

// Random-weight V4 checkpoints in exactly the released format (names, dtypes, fp8 128x128
// block scales in ue8m0, packed fp4 experts with per-32 scales, hash tables, MTP block,
// sharded safetensors with an index), for tests and benchmarks.
#pragma once

#include <cstdint>
#include <string>

#include "longctx/model_config.h"

namespace longctx {

// Named starting points for make-test-model.
//  tiny:  a few MB; window, c4a and c128a layers, hash and scored MoE, sliding window 16.
//  flash: V4-Flash dimensions (the layer pattern cut to the requested number of layers).
//  pro:   V4-Pro dimensions, likewise.
ModelConfig test_model_preset(const std::string& name, int64_t num_layers = -1);

// The compress_ratios pattern of a preset for `num_layers` layers plus one MTP block.
std::vector<int> preset_compress_ratios(const std::string& name, int64_t num_layers);

struct TestModelOptions {
  ModelConfig config;
  uint64_t seed = 0;
  int num_shards = 2;
  // Folder holding tokenizer.json (+ tokenizer_config.json) to copy; empty: none.
  std::string tokenizer_dir;
};

// Writes config.json, generation_config.json, the shards and model.safetensors.index.json
// into out_dir (created if needed). Same options and seed give byte-identical files.
void write_test_model(const TestModelOptions& options, const std::string& out_dir);

}  // namespace longctx

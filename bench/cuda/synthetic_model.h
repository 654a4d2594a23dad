// V4 weights without a checkpoint, for benchmarks at full size: the parameter list of
// model_param_specs (names, shapes and stored formats exactly as released) bound into a
// ModelWeights whose linears carry no data (CudaBackend::DeviceRandomWeights makes them on the
// device), and whose small fp32 vectors (norms, hyper-connections, compressor biases, sinks,
// router biases, hash tables) are drawn on the host like make-test-model's.
#pragma once

#include <cstdint>
#include <string>

#include "model/model_weights.h"

namespace longctx::bench {

// The preset ("flash" or "pro") cut to `layers` main layers (-1: all) and `experts` routed
// experts (-1: all), with its released formats (fp8 linears, fp4 experts).
ModelConfig synthetic_config(const std::string& preset, int64_t layers, int64_t experts);

ModelWeights synthetic_weights(const ModelConfig& config, uint64_t seed);

}  // namespace longctx::bench

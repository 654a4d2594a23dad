// Sampling on the GPU: the engine's sample_token (src/engine/sampler.cpp) over logit rows that
// are already in device memory, drawing the same token bit for bit (see sampling.cu for how).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <span>

#include "backend/sampling.h"

namespace longctx::cuda {

// The device sampler's scratch (grown on demand) and its staging buffers; one per stream.
class DeviceSampler {
 public:
  DeviceSampler();
  ~DeviceSampler();
  DeviceSampler(const DeviceSampler&) = delete;
  DeviceSampler& operator=(const DeviceSampler&) = delete;

  // One token per entry of `rows` from the fp32 logit rows `logits` ([*, vocab], row `row` of
  // each entry), plus the raw rows of the entries that ask for them. Enqueues on `stream` and
  // waits for it.
  void sample(const float* logits, int64_t vocab, std::span<const SamplingRow> rows, SampleOutput* output,
              cudaStream_t stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace longctx::cuda

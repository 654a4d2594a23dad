// Linear layers on the CPU: y = x W^T with W in its stored format (bf16, fp8 with 128x128
// block scales, packed fp4 with per-32 scales), decoded row by row to fp32. When the weight
// asks for it, each activation row is first quantized to fp8 in blocks of 128 with
// power-of-two scales, exactly as the reference does before its fp8/fp4 GEMMs.
#pragma once

#include <cstdint>
#include <span>

#include "model/model_weights.h"

namespace longctx::cpu {

// x [rows, w.in] -> y [rows, w.out].
void linear(const LinearWeight& w, const float* x, int64_t rows, float* y);

// The grouped projection of wo_a: output row o reads input group o / (w.out / groups), so
// x is [rows, groups * w.in] and y [rows, w.out].
void linear_grouped(const LinearWeight& w, int64_t groups, const float* x, int64_t rows, float* y);

// Rows of the embedding table for `tokens` -> out [tokens.size(), w.in]. Ids must be valid.
void embedding(const LinearWeight& w, std::span<const int32_t> tokens, float* out);

}  // namespace longctx::cpu

// Elementwise and small-vector operations of the V4 forward, in fp32, written plainly. Every
// reduction runs in a fixed order so results do not depend on batch composition or threads.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace longctx::cpu {

// Sum of a[i] * b[i] over eight interleaved partial sums, combined in a fixed tree.
float dot(const float* a, const float* b, size_t n);

// out = x * rsqrt(mean(x^2) + eps) * weight; weight may be null (no scale). out may alias x.
void rms_norm(const float* x, const float* weight, size_t n, float eps, float* out);

// Normalized Walsh-Hadamard transform (Sylvester order), scaled by n^-0.5; n a power of two.
void hadamard_transform(float* x, size_t n);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
// torch.nn.functional.softplus with beta 1, threshold 20.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// Hyper-connection split of `mixes` [(2 + hc) * hc]: pre [hc], post [hc] and the comb matrix
// [hc][hc] (row j = source stream, column k = destination), made doubly stochastic by
// Sinkhorn iterations.
void hc_split_sinkhorn(const float* mixes, const float* scale, const float* base, int64_t hc,
                       int64_t iterations, float eps, float* pre, float* post, float* comb);

}  // namespace longctx::cpu

// Sampling on a backend: what one draw from one logit row needs, below the engine's layer.
//
// The engine's sampler (src/engine/sampler.cpp) is the definition; a backend that samples on its
// device (Backend::supports_sampling) must draw exactly the token it draws. So the two share the
// only operations whose bits are not fixed by IEEE 754 basic arithmetic: the exponential of the
// scores (sampling_exp, built from +, -, *, floor, no fused multiply-add) and the random draw
// (sampling_uniform, splitmix64). Everything else is double arithmetic in a fixed order that
// both sides spell out.
//
// Header-only and includable from CUDA sources: the two functions are __host__ __device__ there.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#if defined(__CUDACC__)
#define LONGCTX_HOST_DEVICE __host__ __device__
#else
#define LONGCTX_HOST_DEVICE
#endif

namespace longctx {

// A token of a sequence that its penalties act on: seen in the prompt or the output (the
// repetition penalty), `output_count` times in the output (presence and frequency penalties).
// Each token at most once per row.
struct PenaltyEntry {
  int32_t token = 0;
  int32_t output_count = 0;
};

// One draw from row `row` of a forward step's logit rows, with the engine's SamplingParams
// (the numeric ones) and its random stream.
struct SamplingRow {
  int64_t row = 0;
  double temperature = 1.0;  // 0: greedy
  double top_p = 1.0;
  int64_t top_k = -1;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  double presence_penalty = 0.0;
  double frequency_penalty = 0.0;
  uint64_t seed = 0;
  int64_t stream = 0;    // the sequence index
  int64_t position = 0;  // the output position
  std::span<const PenaltyEntry> penalties;
  std::span<const int32_t> banned;  // probability zero
  bool return_logits = false;       // also return the row's raw logits (for logprobs)
};

struct SampleOutput {
  std::vector<int32_t> tokens;  // one per SamplingRow
  std::vector<float> logits;    // [rows with return_logits, vocab], in SamplingRow order
};

namespace sampling_detail {

// Each operation rounded once: no contraction into fused multiply-adds on either side (the host
// build has -ffp-contract=off; the device spells out the round-to-nearest intrinsics).
LONGCTX_HOST_DEVICE inline double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
LONGCTX_HOST_DEVICE inline double add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
LONGCTX_HOST_DEVICE inline double sub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

LONGCTX_HOST_DEVICE inline uint64_t splitmix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace sampling_detail

// exp(x) in double, within a few ulp, the same bits on every host and device. Below -708 (past
// the normal range) it returns 0: such a probability can never be drawn.
LONGCTX_HOST_DEVICE inline double sampling_exp(double x) {
  using namespace sampling_detail;
  if (x != x) return x;
  if (x < -708.0) return 0.0;
  if (x > 709.0) return HUGE_VAL;
  // x = n ln2 + r with |r| <= ln2 / 2; ln2 split so that n * hi is exact for |n| < 2^21.
  const double hi = 0x1.62e42fee00000p-1, lo = 0x1.a39ef35793c76p-33;
  const double n = floor(add(mul(x, 0x1.71547652b82fep+0), 0.5));
  const double r = sub(sub(x, mul(n, hi)), mul(n, lo));
  // Taylor series to degree 13: the remainder r^14/14! < 5e-18 of the result.
  constexpr double kInverseFactorials[] = {
      1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
      1.0 / 40320.0,      1.0 / 5040.0,      1.0 / 720.0,      1.0 / 120.0,     1.0 / 24.0,
      1.0 / 6.0,          0.5,               1.0,              1.0};
  double p = kInverseFactorials[0];
  for (int i = 1; i < 14; ++i) p = add(mul(p, r), kInverseFactorials[i]);
  // 2^n is a normal double here, so the scaling is exact.
  const uint64_t bits = static_cast<uint64_t>(static_cast<int64_t>(n) + 1023) << 52;
  double scale;
  memcpy(&scale, &bits, sizeof scale);
  return mul(p, scale);
}

// A uniform double in [0, 1) from (seed, stream, position): splitmix64 over their mix.
LONGCTX_HOST_DEVICE inline double sampling_uniform(uint64_t seed, int64_t stream, int64_t position) {
  using namespace sampling_detail;
  uint64_t z = splitmix(seed + 0x9e3779b97f4a7c15ull);
  z = splitmix(z ^ (static_cast<uint64_t>(stream) * 0xd1b54a32d192ed03ull));
  z = splitmix(z ^ (static_cast<uint64_t>(position) + 0x632be59bd9b4e019ull));
  return static_cast<double>(z >> 11) * 0x1p-53;
}

}  // namespace longctx

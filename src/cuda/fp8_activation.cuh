// Device side of Fp8Activations (kernels.h): one warp turns one (row, 128-column block) of fp32
// activations into the e4m3 codes and power-of-two scale that the fp8 tensor-core GEMM reads.
//
// Layout: lane l holds columns 4l..4l+3 of the block (one 16-byte load per lane, one 4-byte
// store of codes). The view's layout is in kernels.h.
//
// Numerics: the codes are those of quantize(fp8_simulate(v)), computed literally (simulate with
// the block's scale, then quantize the simulated values with their own scale), so that they equal
// bitwise what the GEMM's quantization pass finds in the fp8_simulate_rows copy the backend made
// before. Quantizing v directly is NOT the same in one case: when a block's amax / scale lies in
// (224, 232], the simulation rounds the amax to 224 x scale, whose own scale is half the first
// (448 x fl(1/448) rounds to exactly 1 and 224 x fl(1/448) to exactly 1/2), so its codes are
// twice those of v. The products are equal, but only the literal form is equal by construction.
#pragma once

#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace longctx::cuda {

// v (4 values per lane, one block per warp; all 32 lanes take part) becomes its fp8 simulation;
// returns the codes' scale and packs lane's 4 codes (column 4l in the low byte) into *packed.
__device__ __forceinline__ float fp8_quantize_block(float (&v)[4], uint32_t* packed) {
  const float amax = warp_max(fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3]))));
  const float simulate_scale = fp8_scale_from_amax(amax);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = fp8_simulate(v[i], simulate_scale);
  const float scale =
      fp8_scale_from_amax(warp_max(fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])))));
  uint32_t codes = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    codes |= static_cast<uint32_t>(float_to_fp8(fminf(fmaxf(v[i] / scale, -448.0f), 448.0f))) << (8 * i);
  }
  *packed = codes;
  return scale;
}

// Stores block b of row r (lane's part: simulated values v, packed codes, the block's scale)
// into the view: codes and scale for rows under tc_rows, the simulated values for the tail.
__device__ __forceinline__ void fp8_store_block(const Fp8Activations& a, int64_t r, int64_t b, int lane,
                                                const float (&v)[4], uint32_t packed, float scale) {
  if (r < a.tc_rows) {
    *reinterpret_cast<uint32_t*>(a.codes + r * a.width + b * 128 + 4 * lane) = packed;
    if (lane == 0) a.scales[b * a.tc_rows + r] = scale;
  } else {
    *reinterpret_cast<float4*>(a.tail + (r - a.tc_rows) * a.tail_stride + b * 128 + 4 * lane) =
        make_float4(v[0], v[1], v[2], v[3]);
  }
}

}  // namespace longctx::cuda

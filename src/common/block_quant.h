// Block-wise quantization with power-of-two (ue8m0) scales, as the V4 reference does it for
// activations (fp8, blocks of 128 before fp8/fp4 linears), for the non-rope part of every KV
// vector (fp8, blocks of 64) and for the indexer (fp4, blocks of 32).
//
// For each block: amax = max |x| (floored), scale = 2^ceil(log2(amax / format_max)),
// q = round(clamp(x / scale, +-format_max)). "Simulate" writes q * scale back in place, which is
// exactly the value the quantized tensor represents.
#pragma once

#include <cstddef>
#include <cstdint>

namespace longctx {

// The power-of-two scale of one fp8 block.
float fp8_block_scale(const float* x, size_t n);
// The power-of-two scale of one fp4 block.
float fp4_block_scale(const float* x, size_t n);

// In-place quantize-dequantize of x[0, n) in blocks of `block` (n % block == 0).
void fp8_simulate_blocks(float* x, size_t n, size_t block);
void fp4_simulate_blocks(float* x, size_t n, size_t block);

// Quantizes x[0, n) into e4m3 codes and one e8m0 scale byte per block.
void fp8_quantize_blocks(const float* x, size_t n, size_t block, uint8_t* codes,
                         uint8_t* scales);
// Quantizes x[0, n) into packed e2m1 codes (two per byte, low nibble first) and one e8m0
// scale byte per block.
void fp4_quantize_blocks(const float* x, size_t n, size_t block, uint8_t* packed,
                         uint8_t* scales);

}  // namespace longctx

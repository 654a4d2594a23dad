// Device helpers shared by the kernels: the number formats of the model (bf16, fp8 e4m3, fp4
// e2m1, e8m0 scales) with the same rounding as src/common/float_formats.h, the power-of-two
// block scales of src/common/block_quant.h, RoPE, warp/block reductions, and the element
// codecs of the KV cache (src/kv/kv_entry_codec.h).
#pragma once

#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace longctx::cuda {

// ---- bf16
__device__ __forceinline__ float bf16_bits_to_float(uint32_t bits) {
  return __uint_as_float(bits << 16);
}
__device__ __forceinline__ uint16_t float_to_bf16_bits(float value) {
  uint32_t bits = __float_as_uint(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
__device__ __forceinline__ float round_bf16(float value) {
  return bf16_bits_to_float(float_to_bf16_bits(value));
}

// ---- e8m0: 2^(byte - 127)
__device__ __forceinline__ float e8m0_to_float(uint32_t byte) {
  if (byte == 0xffu) return __int_as_float(0x7fc00000);
  if (byte == 0u) return __uint_as_float(0x00400000u);  // 2^-127
  return __uint_as_float(byte << 23);
}
__device__ __forceinline__ uint8_t pow2_to_e8m0(float power_of_two) {
  const uint32_t exponent = (__float_as_uint(power_of_two) >> 23) & 0xffu;
  return static_cast<uint8_t>(exponent == 0xffu ? 254u : exponent);  // subnormal powers -> 0
}
// Smallest power of two >= x (x > 0), from the bits as the reference does.
__device__ __forceinline__ float pow2_ceil(float x) {
  const uint32_t bits = __float_as_uint(x);
  const int exponent = static_cast<int>((bits >> 23) & 0xffu) - 127 + ((bits & 0x7fffffu) != 0);
  return ldexpf(1.0f, exponent);
}

// ---- fp8 e4m3fn (satfinite, round to nearest even)
__device__ __forceinline__ float fp8_to_float(uint32_t byte) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(byte), __NV_E4M3);
  return __half2float(__half(h));
}
__device__ __forceinline__ uint8_t float_to_fp8(float value) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(value, __NV_SATFINITE, __NV_E4M3));
}
__device__ __forceinline__ float round_fp8(float value) { return fp8_to_float(float_to_fp8(value)); }

// ---- fp4 e2m1: codes 0..7 = 0, .5, 1, 1.5, 2, 3, 4, 6; bit 3 the sign
// Built from the bits (a table indexed at run time would live in local memory).
__device__ __forceinline__ float fp4_to_float(uint32_t code) {
  const uint32_t exponent = (code >> 1) & 3u;
  const uint32_t mantissa = code & 1u;
  const float m = exponent == 0 ? 0.5f * static_cast<float>(mantissa)
                                : __uint_as_float(((exponent + 126u) << 23) | (mantissa << 22));
  return (code & 8u) ? -m : m;
}
// Code of the nearest e2m1 value (ties to the even code), saturating at 6.
__device__ __forceinline__ uint32_t float_to_fp4_code(float value) {
  const float a = fminf(fabsf(value), 6.0f);
  uint32_t code;
  if (a <= 0.25f) code = 0;        // tie 0.25 -> 0 (even)
  else if (a < 0.75f) code = 1;
  else if (a <= 1.25f) code = 2;   // ties 0.75 -> 1.0, 1.25 -> 1.0
  else if (a < 1.75f) code = 3;
  else if (a <= 2.5f) code = 4;    // ties 1.75 -> 2, 2.5 -> 2
  else if (a < 3.5f) code = 5;
  else if (a <= 5.0f) code = 6;    // ties 3.5 -> 4, 5 -> 4
  else code = 7;
  return (signbit(value) ? 8u : 0u) | code;
}
__device__ __forceinline__ float round_fp4(float value) { return fp4_to_float(float_to_fp4_code(value)); }

// ---- block scales (src/common/block_quant.cpp)
__device__ __forceinline__ float fp8_scale_from_amax(float amax) {
  return pow2_ceil(fmaxf(amax, 1e-4f) * static_cast<float>(1.0 / 448.0));
}
__device__ __forceinline__ float fp4_scale_from_amax(float amax) {
  return pow2_ceil(fmaxf(amax, 6.0f * 0x1p-126f) * static_cast<float>(1.0 / 6.0));
}
// The quantize-dequantize of one value with its block scale.
__device__ __forceinline__ float fp8_simulate(float value, float scale) {
  return round_fp8(fminf(fmaxf(value / scale, -448.0f), 448.0f)) * scale;
}
__device__ __forceinline__ float fp4_simulate(float value, float scale) {
  return round_fp4(fminf(fmaxf(value / scale, -6.0f), 6.0f)) * scale;
}

// ---- reductions
__device__ __forceinline__ float warp_sum(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}
__device__ __forceinline__ float warp_max(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 33 floats. Fixed order: lanes by butterfly, then warps in order.
__device__ __forceinline__ float block_sum(float value, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  value = warp_sum(value);
  __syncthreads();
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) total += scratch[w];
    scratch[32] = total;
  }
  __syncthreads();
  return scratch[32];
}
__device__ __forceinline__ float block_max(float value, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  value = warp_max(value);
  __syncthreads();
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = scratch[0];
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) m = fmaxf(m, scratch[w]);
    scratch[32] = m;
  }
  __syncthreads();
  return scratch[32];
}

// ---- RoPE: angle = float(pos) * freq, cos/sin in double (as src/model/rope.cpp).
__device__ __forceinline__ void rope_pair(float* re, float* im, int32_t pos, float inv_freq,
                                          bool inverse) {
  const float angle = static_cast<float>(pos) * inv_freq;
  double s_d, c_d;
  sincos(static_cast<double>(angle), &s_d, &c_d);
  const float c = static_cast<float>(c_d);
  const float s = inverse ? -static_cast<float>(s_d) : static_cast<float>(s_d);
  const float a = *re;
  const float b = *im;
  *re = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  *im = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

// ---- KV entries (kv_entry_codec): element i of a stored main vector.
__device__ __forceinline__ float decode_kv_element(const uint8_t* entry, int i, int dtype,
                                                   int head_dim, int rope_dim) {
  if (dtype == kKvF32) return reinterpret_cast<const float*>(entry)[i];
  if (dtype == kKvBF16) return bf16_bits_to_float(reinterpret_cast<const uint16_t*>(entry)[i]);
  const int nope = head_dim - rope_dim;
  if (i < nope) {
    const uint8_t* scales = entry + nope + 2 * rope_dim;
    return fp8_to_float(entry[i]) * e8m0_to_float(scales[i / 64]);
  }
  const uint16_t* rope = reinterpret_cast<const uint16_t*>(entry + nope);
  return bf16_bits_to_float(rope[i - nope]);
}
__device__ __forceinline__ float decode_key_element(const uint8_t* key, int i, int dtype, int dim) {
  if (dtype == kKeyF32) return reinterpret_cast<const float*>(key)[i];
  if (dtype == kKeyBF16) return bf16_bits_to_float(reinterpret_cast<const uint16_t*>(key)[i]);
  const uint32_t byte = key[i / 2];
  return fp4_to_float((i & 1) ? (byte >> 4) : (byte & 0xfu)) * e8m0_to_float(key[dim / 2 + i / 32]);
}

// One warp stores the vector v [head_dim] (readable by all lanes) as a main KV entry.
__device__ __forceinline__ void warp_encode_kv(const float* v, uint8_t* entry, int dtype,
                                               int head_dim, int rope_dim) {
  const int lane = threadIdx.x & 31;
  if (dtype == kKvF32) {
    for (int i = lane; i < head_dim; i += 32) reinterpret_cast<float*>(entry)[i] = v[i];
    return;
  }
  if (dtype == kKvBF16) {
    for (int i = lane; i < head_dim; i += 32) reinterpret_cast<uint16_t*>(entry)[i] = float_to_bf16_bits(v[i]);
    return;
  }
  const int nope = head_dim - rope_dim;
  uint8_t* scales = entry + nope + 2 * rope_dim;
  for (int block = 0; block < nope / 64; ++block) {
    const float a = v[block * 64 + lane];
    const float b = v[block * 64 + 32 + lane];
    const float scale = fp8_scale_from_amax(warp_max(fmaxf(fabsf(a), fabsf(b))));
    entry[block * 64 + lane] = float_to_fp8(fminf(fmaxf(a / scale, -448.0f), 448.0f));
    entry[block * 64 + 32 + lane] = float_to_fp8(fminf(fmaxf(b / scale, -448.0f), 448.0f));
    if (lane == 0) scales[block] = pow2_to_e8m0(scale);
  }
  uint16_t* rope = reinterpret_cast<uint16_t*>(entry + nope);
  for (int i = lane; i < rope_dim; i += 32) rope[i] = float_to_bf16_bits(v[nope + i]);
}

// One warp stores the indexer key v [dim] in its storage dtype.
__device__ __forceinline__ void warp_encode_key(const float* v, uint8_t* key, int dtype, int dim) {
  const int lane = threadIdx.x & 31;
  if (dtype == kKeyF32) {
    for (int i = lane; i < dim; i += 32) reinterpret_cast<float*>(key)[i] = v[i];
    return;
  }
  if (dtype == kKeyBF16) {
    for (int i = lane; i < dim; i += 32) reinterpret_cast<uint16_t*>(key)[i] = float_to_bf16_bits(v[i]);
    return;
  }
  for (int block = 0; block < dim / 32; ++block) {
    const float value = v[block * 32 + lane];
    const float scale = fp4_scale_from_amax(warp_max(fabsf(value)));
    const uint32_t code = float_to_fp4_code(value / scale);
    const uint32_t neighbour = __shfl_down_sync(0xffffffffu, code, 1);
    if ((lane & 1) == 0) key[(block * 32 + lane) / 2] = static_cast<uint8_t>(code | (neighbour << 4));
    if (lane == 0) key[dim / 2 + block] = pow2_to_e8m0(scale);
  }
}

// ---- paged addressing (kv_layout.h)
__device__ __forceinline__ int32_t window_page_id(const BatchView& batch, const ChunkInfo& chunk,
                                                  int32_t pos) {
  return batch.tables[chunk.window_table + pos / kBlockPositions];
}
__device__ __forceinline__ uint8_t* window_ring_entry(const KvLayerView& kv, const BatchView& batch,
                                                      const ChunkInfo& chunk, int32_t pos) {
  const int32_t page = window_page_id(batch, chunk, pos);
  const int slot = (pos % kBlockPositions) % kv.window_entries;
  return kv.window_pages + static_cast<int64_t>(page) * kv.window_page_bytes + slot * kv.kv_entry_bytes;
}
__device__ __forceinline__ float* window_state(const KvLayerView& kv, const BatchView& batch,
                                               const ChunkInfo& chunk, int32_t pos) {
  const int32_t page = window_page_id(batch, chunk, pos);
  return reinterpret_cast<float*>(kv.window_pages + static_cast<int64_t>(page) * kv.window_page_bytes +
                                  kv.state_offset);
}
__device__ __forceinline__ uint8_t* compressed_page(const KvLayerView& kv, const BatchView& batch,
                                                    const ChunkInfo& chunk, int64_t entry) {
  const int64_t block = entry * kv.ratio / kBlockPositions;
  const int32_t page = batch.tables[chunk.compressed_table[kv.compressed_pool] + block];
  return kv.compressed_pages + static_cast<int64_t>(page) * kv.compressed_page_bytes;
}
__device__ __forceinline__ uint8_t* compressed_entry(const KvLayerView& kv, const BatchView& batch,
                                                     const ChunkInfo& chunk, int64_t entry) {
  return compressed_page(kv, batch, chunk, entry) + (entry % kv.entries_per_page) * kv.kv_entry_bytes;
}
__device__ __forceinline__ uint8_t* indexer_key(const KvLayerView& kv, const BatchView& batch,
                                                const ChunkInfo& chunk, int64_t entry) {
  return compressed_page(kv, batch, chunk, entry) + kv.indexer_offset +
         (entry % kv.entries_per_page) * kv.indexer_key_bytes;
}

inline unsigned int ceil_div_u(int64_t a, int64_t b) { return static_cast<unsigned int>((a + b - 1) / b); }

// In-place normalized Walsh-Hadamard transform of v[0, n), n a power of two (Sylvester order),
// by the whole block (indexer queries and keys).
__device__ inline void hadamard(float* v, int n) {
  for (int half = 1; half < n; half *= 2) {
    for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
      const int i = (t / half) * 2 * half + t % half;
      const float a = v[i];
      const float b = v[i + half];
      v[i] = a + b;
      v[i + half] = a - b;
    }
    __syncthreads();
  }
  const float scale = 1.0f / sqrtf(static_cast<float>(n));
  for (int i = threadIdx.x; i < n; i += blockDim.x) v[i] *= scale;
  __syncthreads();
}

}  // namespace longctx::cuda

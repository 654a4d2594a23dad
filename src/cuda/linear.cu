// Linear layers with weights in stored format: y = x W^T.
//
// Layout: x fp32 [rows, in] (row stride x_stride; optional row gather x_rows for MoE slots; for
// the grouped wo_a, output o reads the input slice of group o / x_group_outputs); W [out, in] as
// stored: bf16, fp8 e4m3 with one e8m0 scale per 128x128 block ([ceil(out/128), ceil(in/128)]),
// or e2m1 packed two per byte (low nibble first) with one e8m0 scale per 32 inputs ([out, in/32]);
// y fp32 [rows, out] (row stride y_stride). Weights are decoded to fp32 in shared memory, exactly
// (the products of fp8/fp4 codes with power-of-two scales are representable).
//
// Tiling: a block of 256 threads computes BM rows x BN outputs, each thread TM x TN of them; K
// advances 32 at a time through shared memory. Reduction order (batch invariance): every output
// sums K in chunks of 256, each chunk sequentially with fused multiply-adds from a zero start,
// and the chunk partials are added in chunk order. Every tile shape does exactly this, and so
// does split-K (one block per chunk, partials added in order by linear_finish), so a row's
// result has the same bits whatever the batch size.
//
// Expert groups (MoE): blockIdx.z selects the group, whose slots come from device offsets and
// counts; blocks loop over the group's row tiles.
//
// GEMV path (calls of at most 8 rows, per busy expert group on average; see gemv_body): the
// same fma chain per (output, 256-chunk) and the same in-order chunk sums, one thread per chain,
// with the weights streamed by bulk copies through a two-stage shared-memory pipeline. Its
// results are bit-identical to the tiled kernel's (tested for every format and layout).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/gemm_bf16_split.h"
#include "cuda/gemm_bf16_tc.h"
#include "cuda/gemm_fp8_tc.h"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kChunk = 256;
constexpr int kBK = 32;
constexpr int kThreads = 256;

struct LinearArgs {
  const uint8_t* weight;
  const uint8_t* scale;
  int64_t out, in;
  int64_t group_weight_bytes, group_scale_bytes;
  const float* x;
  int64_t x_stride;
  const int32_t* x_rows;
  int64_t x_group_outputs;
  float* y;
  int64_t y_stride;
  int64_t rows;
  const int32_t* offsets;
  const int32_t* counts;
  const int32_t* group_list;  // optional: blockIdx.z / splits indexes this list of groups (-1: none)
  int splits;
  float* partial;
  int64_t total_rows;
};

// Decodes EPT consecutive weights of row o starting at k (k % EPT == 0) into values.
template <int FMT, int EPT>
__device__ __forceinline__ void load_weights(const LinearArgs& a, const uint8_t* weight,
                                             const uint8_t* scale, int64_t o, int64_t k,
                                             float* values) {
  if constexpr (FMT == kWeightBF16) {
    const uint4* source = reinterpret_cast<const uint4*>(weight + (o * a.in + k) * 2);
#pragma unroll
    for (int v = 0; v < EPT / 8; ++v) {
      const uint4 bits = __ldg(source + v);
      const uint32_t words[4] = {bits.x, bits.y, bits.z, bits.w};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        values[v * 8 + 2 * w] = bf16_bits_to_float(words[w] & 0xffffu);
        values[v * 8 + 2 * w + 1] = bf16_bits_to_float(words[w] >> 16);
      }
    }
  } else if constexpr (FMT == kWeightFP8) {
    const int64_t scale_cols = (a.in + 127) / 128;
    const float s = e8m0_to_float(__ldg(scale + (o / 128) * scale_cols + k / 128));
    uint32_t words[EPT / 4];
    if constexpr (EPT == 8) {
      const uint2 bits = __ldg(reinterpret_cast<const uint2*>(weight + o * a.in + k));
      words[0] = bits.x;
      words[1] = bits.y;
    } else {
      const uint4 bits = __ldg(reinterpret_cast<const uint4*>(weight + o * a.in + k));
      words[0] = bits.x;
      words[1] = bits.y;
      words[2] = bits.z;
      words[3] = bits.w;
    }
#pragma unroll
    for (int w = 0; w < EPT / 4; ++w) {
#pragma unroll
      for (int b = 0; b < 4; ++b) values[4 * w + b] = fp8_to_float((words[w] >> (8 * b)) & 0xffu) * s;
    }
  } else {
    const float s = e8m0_to_float(__ldg(scale + o * (a.in / 32) + k / 32));
    uint32_t words[EPT / 8];
    if constexpr (EPT == 8) {
      words[0] = __ldg(reinterpret_cast<const uint32_t*>(weight + o * (a.in / 2) + k / 2));
    } else {
      const uint2 bits = __ldg(reinterpret_cast<const uint2*>(weight + o * (a.in / 2) + k / 2));
      words[0] = bits.x;
      words[1] = bits.y;
    }
#pragma unroll
    for (int w = 0; w < EPT / 8; ++w) {
#pragma unroll
      for (int b = 0; b < 8; ++b) values[8 * w + b] = fp4_to_float((words[w] >> (4 * b)) & 0xfu) * s;
    }
  }
}

template <int FMT, int BM, int BN, int TM, int TN>
__global__ void __launch_bounds__(kThreads) linear_kernel(LinearArgs a) {
  begin_dependent_kernel();
  constexpr int TX = BN / TN;
  constexpr int TY = BM / TM;
  static_assert(TX * TY == kThreads, "tile shape must use 256 threads");
  constexpr int EPT = BN * kBK / kThreads;  // weights each thread loads per stage
  constexpr int TPR = kBK / EPT;            // threads per weight row
  __shared__ float xs[kBK][BM + 1];
  __shared__ float ws[kBK][BN + 1];

  const int tid = threadIdx.x;
  const int tx = tid % TX;
  const int ty = tid / TX;
  const int64_t tile_o = static_cast<int64_t>(blockIdx.x) * BN;
  const int group_slot = static_cast<int>(blockIdx.z) / a.splits;
  const int group = a.group_list != nullptr ? a.group_list[group_slot] : group_slot;
  if (group < 0) return;
  const int split = static_cast<int>(blockIdx.z) % a.splits;
  const int64_t base = a.offsets != nullptr ? a.offsets[group] : 0;
  const int64_t count = a.counts != nullptr ? a.counts[group] : a.rows;
  const uint8_t* weight = a.weight + group * a.group_weight_bytes;
  const uint8_t* scale = a.scale != nullptr ? a.scale + group * a.group_scale_bytes : nullptr;
  const int64_t x_col = a.x_group_outputs > 0 ? (tile_o / a.x_group_outputs) * a.in : 0;
  const int chunks = static_cast<int>((a.in + kChunk - 1) / kChunk);
  const int chunk_begin = a.splits > 1 ? split : 0;
  const int chunk_end = a.splits > 1 ? split + 1 : chunks;
  // The weight row and K slice this thread loads.
  const int load_n = tid / TPR;
  const int load_k = (tid % TPR) * EPT;
  const int64_t load_o = tile_o + load_n;

  for (int64_t row_tile = blockIdx.y; row_tile * BM < count; row_tile += gridDim.y) {
    const int64_t row0 = base + row_tile * BM;
    const int64_t tile_rows = min(static_cast<int64_t>(BM), count - row_tile * BM);
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
    }
    for (int c = chunk_begin; c < chunk_end; ++c) {
      float part[TM][TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) part[i][j] = 0.0f;
      }
      const int64_t k_end = min(a.in, static_cast<int64_t>(c + 1) * kChunk);
      for (int64_t k0 = static_cast<int64_t>(c) * kChunk; k0 < k_end; k0 += kBK) {
        __syncthreads();
        for (int idx = tid; idx < BM * kBK; idx += kThreads) {
          const int m = idx / kBK;
          const int k = idx % kBK;
          float value = 0.0f;
          if (m < tile_rows) {
            const int64_t slot = row0 + m;
            const int64_t x_row = a.x_rows != nullptr ? a.x_rows[slot] : slot;
            value = a.x[x_row * a.x_stride + x_col + k0 + k];
          }
          xs[k][m] = value;
        }
        float values[EPT];
        if (load_o < a.out) {
          load_weights<FMT, EPT>(a, weight, scale, load_o, k0 + load_k, values);
        } else {
#pragma unroll
          for (int e = 0; e < EPT; ++e) values[e] = 0.0f;
        }
#pragma unroll
        for (int e = 0; e < EPT; ++e) ws[load_k + e][load_n] = values[e];
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < kBK; ++kk) {
          float av[TM];
          float bv[TN];
#pragma unroll
          for (int i = 0; i < TM; ++i) av[i] = xs[kk][ty + i * TY];
#pragma unroll
          for (int j = 0; j < TN; ++j) bv[j] = ws[kk][tx + j * TX];
#pragma unroll
          for (int i = 0; i < TM; ++i) {
#pragma unroll
            for (int j = 0; j < TN; ++j) part[i][j] = fmaf(av[i], bv[j], part[i][j]);
          }
        }
      }
      if (a.splits > 1) {
#pragma unroll
        for (int i = 0; i < TM; ++i) {
          const int m = ty + i * TY;
          if (m >= tile_rows) continue;
#pragma unroll
          for (int j = 0; j < TN; ++j) {
            const int64_t o = tile_o + tx + j * TX;
            if (o < a.out) a.partial[(static_cast<int64_t>(c) * a.total_rows + row0 + m) * a.out + o] = part[i][j];
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < TM; ++i) {
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] = acc[i][j] + part[i][j];
        }
      }
    }
    if (a.splits == 1) {
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const int m = ty + i * TY;
        if (m >= tile_rows) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          const int64_t o = tile_o + tx + j * TX;
          if (o < a.out) a.y[(row0 + m) * a.y_stride + o] = acc[i][j];
        }
      }
    }
  }
}

// y[r, o] = sum over chunks c in order of partial[c, r, o].
__global__ void linear_finish_kernel(const float* partial, int chunks, int64_t rows, int64_t out,
                                     float* y, int64_t y_stride) {
  begin_dependent_kernel();
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= rows * out) return;
  const int64_t r = index / out;
  const int64_t o = index % out;
  float total = 0.0f;
  for (int c = 0; c < chunks; ++c) total = total + partial[(static_cast<int64_t>(c) * rows + r) * out + o];
  y[r * y_stride + o] = total;
}

// ---------------------------------------------------------------- GEMV (few rows)
// Decode and small batches stream each weight byte once and do little arithmetic on it, so the
// tiled kernel (one weight tile per 4 rows, decoded by 256 threads, split-K round trips) leaves
// HBM idle. This path keeps the reduction order of the tiled kernel exactly: one thread runs the
// sequential fma chain of one (output, 256-chunk) pair for R rows at once (R = 1, 2, 4, 8), and
// the chunk partials of an output are added in chunk order from a zero start. What changes is
// who moves the bytes: a block streams a tile of `lo` consecutive weight rows x `stage_chunks`
// chunks, and the R activation rows of those chunks, through two shared-memory stage buffers
// filled by bulk copies (one per weight row and per activation row, issued by warp 0, completing
// on a per-buffer mbarrier; each weight row padded by 16 bytes so the 8 lanes of a 16-byte
// shared load hit distinct banks). Persistent blocks walk (group slot, output tile, row pass,
// K stage) steps so the next tile loads while this one computes; the group table (busy list,
// offsets, counts) is read into shared memory once, and the scales and gathered row indices of a
// step are loaded one step ahead. Lanes of a warp own `lo` consecutive outputs of 32 / lo
// adjacent chunks, so activations are broadcast shared loads. Weights are decoded to the values
// load_weights gives (code x power-of-two scale, exact), through half precision where that is
// exact too (see GemvPiece).
constexpr int kGemvMaxRows = 8;
constexpr int kGemvBufferBytes = 96 * 1024;  // shared memory of one pipeline stage (weights + x)
constexpr int kGemvMaxThreads = 256;
constexpr int kGemvPad = 16;

template <int FMT>
constexpr int gemv_chunk_bytes() {  // bytes of one row's 256-chunk
  return FMT == kWeightBF16 ? 512 : (FMT == kWeightFP8 ? 256 : 128);
}

struct GemvShape {
  int lo;            // outputs per block (8, 16 or 32); lanes lo apart share a chunk
  int stage_chunks;  // chunks of each output per stage (a multiple of 32 / lo)
  int stages;        // stages per row pass: ceil(chunks / stage_chunks)
  int row_pitch;     // shared-memory bytes per weight row of a stage buffer
  int buffer_bytes;  // one stage buffer: lo weight rows, then R x stage_chunks x 256 floats of x
  int out_tiles;
  int group_slots;   // expert groups (or busy-list entries); 1 for a plain linear
  int slot_stride, tile_stride;  // gridDim.x = slot_stride x out_tiles + tile_stride
};

// Bulk copies (the copy engine) completing on a shared-memory barrier.
__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}
__device__ __forceinline__ void barrier_init(uint64_t* barrier) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(shared_address(barrier)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void barrier_expect_bytes(uint64_t* barrier, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void barrier_wait(uint64_t* barrier, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait;\n"
      "}\n" ::"r"(shared_address(barrier)),
      "r"(parity)
      : "memory");
}
// Loads issued where they stand (volatile: not sunk towards their use a step later).
__device__ __forceinline__ uint32_t load_byte_now(const uint8_t* pointer) {
  uint32_t value;
  asm volatile("ld.global.nc.u8 %0, [%1];\n" : "=r"(value) : "l"(pointer));
  return value;
}
__device__ __forceinline__ uint32_t load_word_now(const void* pointer) {
  uint32_t value;
  asm volatile("ld.global.nc.u32 %0, [%1];\n" : "=r"(value) : "l"(pointer));
  return value;
}
__device__ __forceinline__ void bulk_copy(void* shared, const void* global, uint32_t bytes, uint64_t* barrier) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   shared_address(shared)),
               "l"(global), "r"(bytes), "r"(shared_address(barrier))
               : "memory");
}

__device__ __forceinline__ __half2 half2_from_bits(uint32_t bits) {
  __half2 h;
  static_assert(sizeof(h) == sizeof(bits));
  memcpy(&h, &bits, sizeof(h));
  return h;
}

// The weights of one 16-byte piece of a row, decoded in k order.
template <int FMT>
struct GemvPiece {
  static constexpr int kWeights = FMT == kWeightBF16 ? 8 : (FMT == kWeightFP8 ? 16 : 32);
  float w[kWeights];

  // bf16: exact widening.
  __device__ __forceinline__ void decode_bf16(uint4 bits) {
    const uint32_t words[4] = {bits.x, bits.y, bits.z, bits.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[2 * i] = __uint_as_float(words[i] << 16);
      w[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  }
  // fp8 e4m3 to half is exact; the weight is fp8_to_float(code) * s, s = 2^(byte - 127).
  //  - byte in [113, 134] (fp8_half_scale_ok): the half product code x s is exact (a multiple of
  //    2^-23, at most 448 x 2^7) and widens exactly: the same value;
  //  - else the fp32 product, literally as load_weights computes it.
  __device__ __forceinline__ static bool fp8_half_scale_ok(uint32_t scale_byte) {
    return scale_byte - 113u <= 134u - 113u;
  }
  __device__ __forceinline__ void decode_fp8_half(uint4 bits, uint32_t scale_byte) {
    const uint32_t words[4] = {bits.x, bits.y, bits.z, bits.w};
    const uint32_t scale_half = (scale_byte - 112u) << 10;  // exponent field of 2^(byte - 127)
    const __half2 scale2 = half2_from_bits(scale_half | (scale_half << 16));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>((words[i] >> (16 * h)) & 0xffffu), __NV_E4M3);
        const float2 f = __half22float2(__hmul2(__half2(raw), scale2));
        w[4 * i + 2 * h] = f.x;
        w[4 * i + 2 * h + 1] = f.y;
      }
    }
  }
  __device__ __forceinline__ void decode_fp8(uint4 bits, uint32_t scale_byte) {
    if (fp8_half_scale_ok(scale_byte)) {
      decode_fp8_half(bits, scale_byte);
      return;
    }
    const uint32_t words[4] = {bits.x, bits.y, bits.z, bits.w};
    const float s = e8m0_to_float(scale_byte);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>((words[i] >> (16 * h)) & 0xffffu), __NV_E4M3);
        const float2 f = __half22float2(__half2(raw));
        w[4 * i + 2 * h] = f.x * s;
        w[4 * i + 2 * h + 1] = f.y * s;
      }
    }
  }
  // fp4 e2m1: nibble j and j + 4 of a word become one half2 whose values are code x 2^-14
  // (magnitude bits at 9..11 = exponent 2 bits + 1 mantissa bit, sign at 15; e2m1 0.5 is the
  // half subnormal 2^-15). The weight is fp4_to_float(code) * s, s = 2^(byte - 127):
  //  - byte in [105, 128]: the half product code x 2^-14 x 2^(byte-113) = code x s is exact in
  //    half (a multiple of 2^-23, at most 12) and widens exactly: the same value;
  //  - byte <= 240: x (s x 2^14) in fp32, an exact scale: one rounding of code x s, the same;
  //  - else (code x 2^-14 x 2^14 = code, exact) x s, literally the same product.
  // fp4_half_scales_ok: all four bytes of a word in [105, 128].
  __device__ __forceinline__ static bool fp4_half_scales_ok(uint32_t scale_bytes) {
    return __vcmpleu4(__vsub4(scale_bytes, 0x69696969u), 0x17171717u) == 0xffffffffu;
  }
  __device__ __forceinline__ void decode_fp4_half(uint4 bits, uint32_t scale_byte) {
    const uint32_t words[4] = {bits.x, bits.y, bits.z, bits.w};
    const uint32_t scale_half = (scale_byte - 98u) << 10;  // exponent field of 2^(byte - 113)
    const __half2 scale2 = half2_from_bits(scale_half | (scale_half << 16));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __half22float2(__hmul2(half2_from_bits(fp4_pair_bits(words[i], j)), scale2));
        w[8 * i + j] = f.x;
        w[8 * i + j + 4] = f.y;
      }
    }
  }
  __device__ __forceinline__ void decode_fp4(uint4 bits, uint32_t scale_byte) {
    if (scale_byte - 105u <= 128u - 105u) {
      decode_fp4_half(bits, scale_byte);
      return;
    }
    const uint32_t words[4] = {bits.x, bits.y, bits.z, bits.w};
    const float s = e8m0_to_float(scale_byte);
    if (scale_byte <= 240u) {
      const float s14 = s * 16384.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 f = __half22float2(half2_from_bits(fp4_pair_bits(words[i], j)));
          w[8 * i + j] = f.x * s14;
          w[8 * i + j + 4] = f.y * s14;
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 f = __half22float2(half2_from_bits(fp4_pair_bits(words[i], j)));
          w[8 * i + j] = (f.x * 16384.0f) * s;
          w[8 * i + j + 4] = (f.y * 16384.0f) * s;
        }
      }
    }
  }
  __device__ __forceinline__ static uint32_t fp4_pair_bits(uint32_t word, int j) {
    const uint32_t magnitude = (j < 3 ? word << (9 - 4 * j) : word >> 3) & 0x0e000e00u;
    const uint32_t sign = (word << (12 - 4 * j)) & 0x80008000u;
    return magnitude | sign;
  }
};

// One step of a block's walk: output tile `tile` of group slot `slot` (whose group, first slot
// and slot count come from the block's shared table), rows [pass R, pass R + R) of the group's
// slots, K stage `stage`. Items (slot, tile) are visited blockIdx.x, + gridDim.x, ... in
// slot-major order, without divisions. slot >= group_slots: no step left.
struct GemvStep {
  int slot, tile;
  int group, base, count;
  int pass, stage;
};

// The block's table of group slots: group id (-1: none), first slot, slot count.
struct GemvGroup {
  int group, base, count;
};

__device__ __forceinline__ void gemv_find_item(const GemvShape& g, const GemvGroup* table, int slot, int tile,
                                               GemvStep& step) {
  while (slot < g.group_slots && (table[slot].group < 0 || table[slot].count <= 0)) {
    slot += g.slot_stride;
    tile += g.tile_stride;
    if (tile >= g.out_tiles) {
      tile -= g.out_tiles;
      ++slot;
    }
  }
  step.slot = slot;
  step.tile = tile;
  step.pass = 0;
  step.stage = 0;
  if (slot < g.group_slots) {
    step.group = table[slot].group;
    step.base = table[slot].base;
    step.count = table[slot].count;
  }
}

template <int R>
__device__ __forceinline__ GemvStep gemv_next(const GemvShape& g, const GemvGroup* table, GemvStep step) {
  if (step.slot >= g.group_slots) return step;
  if (step.stage + 1 < g.stages) {
    ++step.stage;
  } else if ((step.pass + 1) * R < step.count) {
    ++step.pass;
    step.stage = 0;
  } else {
    int slot = step.slot + g.slot_stride;
    int tile = step.tile + g.tile_stride;
    if (tile >= g.out_tiles) {
      tile -= g.out_tiles;
      ++slot;
    }
    gemv_find_item(g, table, slot, tile, step);
  }
  return step;
}

template <int FMT>
__device__ __forceinline__ int64_t gemv_row_bytes(int64_t in) {
  return FMT == kWeightBF16 ? in * 2 : (FMT == kWeightFP8 ? in : in / 2);
}

// The activation row that row r of the step's pass reads.
template <int R>
__device__ __forceinline__ int gemv_source_row(const LinearArgs& a, const GemvStep& step, int r) {
  const int slot = step.base + min(step.pass * R + r, step.count - 1);
  return a.x_rows != nullptr ? static_cast<int>(load_word_now(a.x_rows + slot)) : slot;
}

// Warp 0 copies the step's weight tile (lo rows x stage_chunks chunks, clipped to out and in:
// one bulk copy per row) and the K slice of its R activation rows (source rows given) into
// `buffer`; `barrier` completes when all bytes have landed.
template <int FMT, int R>
__device__ __forceinline__ void gemv_load(const LinearArgs& a, const GemvShape& g, const GemvStep& step,
                                          const int* source_rows, uint8_t* buffer, uint64_t* barrier) {
  constexpr int kChunkBytes = gemv_chunk_bytes<FMT>();
  const int lane = threadIdx.x & 31;
  const int64_t row_bytes = gemv_row_bytes<FMT>(a.in);
  const int stage_row_bytes = g.stage_chunks * kChunkBytes;
  const int64_t column0 = static_cast<int64_t>(step.stage) * stage_row_bytes;
  const int columns = static_cast<int>(min(static_cast<int64_t>(stage_row_bytes), row_bytes - column0));
  const int64_t o0 = static_cast<int64_t>(step.tile) * g.lo;
  const int rows = static_cast<int>(min(static_cast<int64_t>(g.lo), a.out - o0));
  const int64_t k0 = column0 / kChunkBytes * kChunk;
  const int x_bytes = static_cast<int>(min(static_cast<int64_t>(g.stage_chunks) * kChunk, a.in - k0)) * 4;
  if (lane == 0) barrier_expect_bytes(barrier, static_cast<uint32_t>(rows * columns + R * x_bytes));
  __syncwarp();
  const uint8_t* source = a.weight + step.group * a.group_weight_bytes + o0 * row_bytes + column0;
  for (int row = lane; row < rows; row += 32) {
    bulk_copy(buffer + row * g.row_pitch, source + row * row_bytes, static_cast<uint32_t>(columns), barrier);
  }
  if (lane < R) {
    const int64_t x_col = (a.x_group_outputs > 0 ? (o0 / a.x_group_outputs) * a.in : 0) + k0;
    const float* x = a.x + static_cast<int64_t>(source_rows[lane]) * a.x_stride + x_col;
    float* target = reinterpret_cast<float*>(buffer + g.lo * g.row_pitch) + lane * g.stage_chunks * kChunk;
    bulk_copy(target, x, static_cast<uint32_t>(x_bytes), barrier);
  }
}

// The sequential fma chains of one (output, chunk) for R rows over `pieces` 16-byte pieces.
// HALF: every piece decodes through half precision (no branch in the loop, so the decode of the
// next pieces overlaps the chain); PIECES > 0: that many pieces, known at compile time.
template <int FMT, int R, bool HALF, int PIECES>
__device__ __forceinline__ void gemv_chain(const uint8_t* weights, const float* x, int x_row_stride, int pieces,
                                           uint2 scales, float (&part)[R]) {
  constexpr int kPieceWeights = GemvPiece<FMT>::kWeights;
  const int count = PIECES > 0 ? PIECES : pieces;
#pragma unroll(PIECES > 0 ? 4 : 1)
  for (int p = 0; p < count; ++p) {
    const uint4 bits = *reinterpret_cast<const uint4*>(weights + p * 16);
    GemvPiece<FMT> piece;
    if constexpr (FMT == kWeightBF16) {
      piece.decode_bf16(bits);
    } else if constexpr (FMT == kWeightFP8) {
      const uint32_t byte = p >= 8 ? scales.y : scales.x;
      if constexpr (HALF) {
        piece.decode_fp8_half(bits, byte);
      } else {
        piece.decode_fp8(bits, byte);
      }
    } else {
      const uint32_t byte = ((p < 4 ? scales.x : scales.y) >> (8 * (p % 4))) & 0xffu;
      if constexpr (HALF) {
        piece.decode_fp4_half(bits, byte);
      } else {
        piece.decode_fp4(bits, byte);
      }
    }
#pragma unroll
    for (int q = 0; q < kPieceWeights / 4; ++q) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4 xv = *reinterpret_cast<const float4*>(x + r * x_row_stride + p * kPieceWeights + 4 * q);
        part[r] = fmaf(xv.x, piece.w[4 * q], part[r]);
        part[r] = fmaf(xv.y, piece.w[4 * q + 1], part[r]);
        part[r] = fmaf(xv.z, piece.w[4 * q + 2], part[r]);
        part[r] = fmaf(xv.w, piece.w[4 * q + 3], part[r]);
      }
    }
  }
}

// The scale bytes one thread's chain of `step` needs: fp8 the chunk's two 128-blocks (x, y);
// fp4 one byte per piece, little-endian in x then y. Loaded a step ahead (they come from HBM).
template <int FMT>
__device__ __forceinline__ uint2 gemv_scales(const LinearArgs& a, const GemvShape& g, const GemvStep& step,
                                             int o_local, int c_local) {
  uint2 bytes = make_uint2(0u, 0u);
  if constexpr (FMT != kWeightBF16) {
    const int64_t o = static_cast<int64_t>(step.tile) * g.lo + o_local;
    const int64_t c = static_cast<int64_t>(step.stage) * g.stage_chunks + c_local;
    if (step.slot >= g.group_slots || o >= a.out || c * kChunk >= a.in) return bytes;
    const uint8_t* scale = a.scale + step.group * a.group_scale_bytes;
    if constexpr (FMT == kWeightFP8) {
      const int64_t scale_cols = (a.in + 127) / 128;
      const uint8_t* row_scales = scale + (o / 128) * scale_cols + 2 * c;
      bytes.x = load_byte_now(row_scales);
      if (2 * c + 1 < scale_cols) bytes.y = load_byte_now(row_scales + 1);
    } else {
      const uint8_t* source = scale + o * (a.in / 32) + c * 8;
      const int pieces = static_cast<int>(min(static_cast<int64_t>(8), (a.in - c * kChunk) / 32));
      if (pieces == 8 && (reinterpret_cast<uintptr_t>(source) & 3) == 0) {
        bytes.x = load_word_now(source);
        bytes.y = load_word_now(source + 4);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          if (i < pieces) (i < 4 ? bytes.x : bytes.y) |= load_byte_now(source + i) << (8 * (i % 4));
        }
      }
    }
  }
  return bytes;
}

// Shared memory: two stage barriers, two stage buffers, the partials [2][R][stage_chunks][lo]
// (by step parity), the source rows of the next two steps [2][R], the group table.
template <int R>
size_t gemv_shared_bytes(const GemvShape& g) {
  return 16 + 2 * static_cast<size_t>(g.buffer_bytes) +
         2 * static_cast<size_t>(R) * static_cast<size_t>(g.stage_chunks) * static_cast<size_t>(g.lo) * sizeof(float) +
         2 * R * sizeof(int) + static_cast<size_t>(g.group_slots) * sizeof(GemvGroup);
}

template <int FMT, int R>
__device__ __forceinline__ void gemv_body(const LinearArgs& a, const GemvShape& g) {
  extern __shared__ __align__(128) uint8_t gemv_memory[];
  constexpr int kChunkBytes = gemv_chunk_bytes<FMT>();
  constexpr int kPieceWeights = GemvPiece<FMT>::kWeights;
  uint64_t* barriers = reinterpret_cast<uint64_t*>(gemv_memory);  // one per stage buffer
  uint8_t* gemv_shared = gemv_memory + 16;
  float* partials = reinterpret_cast<float*>(gemv_shared + 2 * g.buffer_bytes);
  const int partial_floats = R * g.stage_chunks * g.lo;
  int* source_rows = reinterpret_cast<int*>(partials + 2 * partial_floats);  // [2][R], by step parity
  GemvGroup* table = reinterpret_cast<GemvGroup*>(source_rows + 2 * R);

  const int tid = threadIdx.x;
  const int threads = blockDim.x;
  const int o_local = (tid & 31) % g.lo;
  const int c_local = (tid >> 5) * (32 / g.lo) + (tid & 31) / g.lo;
  const int chunks = static_cast<int>((a.in + kChunk - 1) / kChunk);

  for (int slot = tid; slot < g.group_slots; slot += threads) {
    const int group = a.group_list != nullptr ? a.group_list[slot] : slot;
    GemvGroup entry{group, 0, 0};
    if (group >= 0) {
      entry.count = a.counts != nullptr ? a.counts[group] : static_cast<int>(a.rows);
      entry.base = a.offsets != nullptr ? a.offsets[group] : 0;
    }
    table[slot] = entry;
  }
  if (tid == 0) {
    barrier_init(&barriers[0]);
    barrier_init(&barriers[1]);
  }
  __syncthreads();

  GemvStep step;
  gemv_find_item(g, table, static_cast<int>(blockIdx.x) / g.out_tiles, static_cast<int>(blockIdx.x) % g.out_tiles, step);
  if (step.slot >= g.group_slots) return;
  if (tid < R) source_rows[tid] = gemv_source_row<R>(a, step, tid);
  __syncwarp();
  if (tid < 32) gemv_load<FMT, R>(a, g, step, source_rows, gemv_shared, &barriers[0]);
  uint32_t phases = 0;  // bit b: the parity the next wait on barrier b waits for
  GemvStep next = gemv_next<R>(g, table, step);
  if (tid < R && next.slot < g.group_slots) source_rows[R + tid] = gemv_source_row<R>(a, next, tid);
  uint2 scales = gemv_scales<FMT>(a, g, step, o_local, c_local);
  float acc[R];  // running sums of the (row, output) pairs this thread reduces
#pragma unroll
  for (int j = 0; j < R; ++j) acc[j] = 0.0f;
  int buffer = 0;
  __syncthreads();
  for (int parity = 1;; parity ^= 1) {
    // Loads of the next step (its source rows are in source_rows[parity]); the source rows of
    // the step after it, read now and stored after the chain; the next step's scales.
    if (tid < 32 && next.slot < g.group_slots) {
      gemv_load<FMT, R>(a, g, next, source_rows + parity * R, gemv_shared + (buffer ^ 1) * g.buffer_bytes,
                        &barriers[buffer ^ 1]);
    }
    const GemvStep after = gemv_next<R>(g, table, next);
    int after_row = 0;
    if (tid < R && after.slot < g.group_slots) after_row = gemv_source_row<R>(a, after, tid);
    const uint2 next_scales = gemv_scales<FMT>(a, g, next, o_local, c_local);

    const int o0 = step.tile * g.lo;
    const int c = step.stage * g.stage_chunks + c_local;
    const bool active = o0 + o_local < a.out && c < chunks;
    const int k_len = active ? static_cast<int>(min(static_cast<int64_t>(kChunk), a.in - static_cast<int64_t>(c) * kChunk)) : 0;
    const int pieces = k_len / kPieceWeights;
    bool half = true;  // every piece of the chunk can decode through half precision
    if constexpr (FMT == kWeightFP8) {
      half = GemvPiece<FMT>::fp8_half_scale_ok(scales.x) && (pieces <= 8 || GemvPiece<FMT>::fp8_half_scale_ok(scales.y));
    } else if constexpr (FMT == kWeightFP4) {
      half = GemvPiece<FMT>::fp4_half_scales_ok(scales.x) && GemvPiece<FMT>::fp4_half_scales_ok(scales.y);
    }

    barrier_wait(&barriers[buffer], (phases >> buffer) & 1u);
    phases ^= 1u << buffer;
    float part[R];
#pragma unroll
    for (int r = 0; r < R; ++r) part[r] = 0.0f;
    if (active) {
      constexpr int kFullPieces = kChunk / kPieceWeights;
      const uint8_t* stage = gemv_shared + buffer * g.buffer_bytes;
      const uint8_t* weights = stage + o_local * g.row_pitch + c_local * kChunkBytes;
      const float* x = reinterpret_cast<const float*>(stage + g.lo * g.row_pitch) + c_local * kChunk;
      const int x_row_stride = g.stage_chunks * kChunk;
      if (pieces == kFullPieces && half) {
        gemv_chain<FMT, R, true, kFullPieces>(weights, x, x_row_stride, pieces, scales, part);
      } else {
        gemv_chain<FMT, R, false, 0>(weights, x, x_row_stride, pieces, scales, part);
      }
    }
    float* stage_partials = partials + (parity ^ 1) * partial_floats;  // not the previous step's
#pragma unroll
    for (int r = 0; r < R; ++r) stage_partials[(r * g.stage_chunks + c_local) * g.lo + o_local] = part[r];
    if (tid < R) source_rows[(parity ^ 1) * R + tid] = after_row;
    __syncthreads();

    // Chunk partials of each (row, output) added in chunk order; the last stage writes y. The
    // last warps reduce (warp 0 issues the copies).
    const int row0 = step.pass * R;
    const int stage_chunks = min(g.stage_chunks, chunks - step.stage * g.stage_chunks);
    const bool last_stage = step.stage == g.stages - 1;
    const int reducer = threads - 1 - tid;
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int pair = reducer + j * threads;
      if (pair < R * g.lo) {
        const int r = pair / g.lo;
        const int ol = pair % g.lo;
        if (step.stage == 0) acc[j] = 0.0f;
        for (int cc = 0; cc < stage_chunks; ++cc) acc[j] = acc[j] + stage_partials[(r * g.stage_chunks + cc) * g.lo + ol];
        if (last_stage && o0 + ol < a.out && row0 + r < step.count) {
          a.y[static_cast<int64_t>(step.base + row0 + r) * a.y_stride + o0 + ol] = acc[j];
        }
      }
    }
    if (next.slot >= g.group_slots) break;
    step = next;
    next = after;
    scales = next_scales;
    buffer ^= 1;
  }
}

// One row: registers capped so that two 256-thread blocks share an SM.
template <int FMT>
__global__ void __launch_bounds__(kGemvMaxThreads, 2) gemv_one_row_kernel(LinearArgs a, GemvShape g) {
  begin_dependent_kernel();
  gemv_body<FMT, 1>(a, g);
}
template <int FMT, int R>
__global__ void __launch_bounds__(kGemvMaxThreads) gemv_kernel(LinearArgs a, GemvShape g) {
  begin_dependent_kernel();
  gemv_body<FMT, R>(a, g);
}

template <int FMT>
const void* gemv_kernel_for(int rows) {
  switch (rows) {
    case 1: return reinterpret_cast<const void*>(&gemv_one_row_kernel<FMT>);
    case 2: return reinterpret_cast<const void*>(&gemv_kernel<FMT, 2>);
    case 4: return reinterpret_cast<const void*>(&gemv_kernel<FMT, 4>);
    default: return reinterpret_cast<const void*>(&gemv_kernel<FMT, 8>);
  }
}

int gemv_chunk_bytes_of(int format) {
  switch (format) {
    case kWeightBF16: return gemv_chunk_bytes<kWeightBF16>();
    case kWeightFP8: return gemv_chunk_bytes<kWeightFP8>();
    default: return gemv_chunk_bytes<kWeightFP4>();
  }
}

// Blocks of `kernel` that fit on one SM with this block size and shared memory (cached; the
// shared-memory limit is raised once per kernel, on the first, eager, call of a shape).
int gemv_blocks_per_sm(const void* kernel, int threads, size_t shared) {
  struct Entry {
    const void* kernel;
    int threads;
    size_t shared;
    int blocks;
  };
  static std::vector<Entry> cache;
  static std::vector<std::pair<const void*, size_t>> allowed;
  for (const Entry& e : cache) {
    if (e.kernel == kernel && e.threads == threads && e.shared == shared) return e.blocks;
  }
  auto limit = std::find_if(allowed.begin(), allowed.end(), [&](const auto& p) { return p.first == kernel; });
  if (limit == allowed.end()) {
    allowed.emplace_back(kernel, 48 * 1024);
    limit = allowed.end() - 1;
  }
  if (shared > limit->second) {
    LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
    limit->second = shared;
  }
  int blocks = 0;
  LONGCTX_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, shared));
  cache.push_back({kernel, threads, shared, std::max(blocks, 1)});
  return cache.back().blocks;
}

// LONGCTX_CUDA_GEMV_MAX_ROWS=N lowers the row bound (0: the tiled kernel everywhere, for A/B runs).
int gemv_env_max_rows() {
  static const int bound = [] {
    const char* text = std::getenv("LONGCTX_CUDA_GEMV_MAX_ROWS");
    return text != nullptr && *text != '\0' ? std::atoi(text) : kGemvMaxRows;
  }();
  return bound;
}

// Streams the weights with gemv_kernel when rows_per_group <= workspace.gemv_max_rows and the
// layout allows it (16-byte aligned weights and activation rows); returns false otherwise.
bool launch_gemv(LinearArgs a, int format, int64_t rows_per_group, int64_t group_slots,
                 const LinearWorkspace& workspace, cudaStream_t stream) {
  if (rows_per_group > std::min({workspace.gemv_max_rows, kGemvMaxRows, gemv_env_max_rows()})) return false;
  if (format != kWeightBF16 && format != kWeightFP8 && format != kWeightFP4) return false;
  if (a.in % kBK != 0) return false;
  if (reinterpret_cast<uintptr_t>(a.weight) % 16 != 0 || a.group_weight_bytes % 16 != 0) return false;
  if (reinterpret_cast<uintptr_t>(a.x) % 16 != 0 || a.x_stride % 4 != 0) return false;
  if (format != kWeightBF16 && a.scale == nullptr) return false;
  if (a.x_group_outputs > 0 && a.x_group_outputs % 8 != 0) return false;
  const int rows = rows_per_group <= 1 ? 1 : (rows_per_group <= 2 ? 2 : (rows_per_group <= 4 ? 4 : 8));
  const int chunk_bytes = gemv_chunk_bytes_of(format);
  const int chunks = static_cast<int>((a.in + kChunk - 1) / kChunk);
  // The widest output tile that still gives every SM work (wider tiles share activation loads).
  GemvShape g{};
  g.group_slots = static_cast<int>(group_slots);
  int64_t items = 0;
  for (const int lo : {32, 16, 8}) {
    if (a.x_group_outputs > 0 && a.x_group_outputs % lo != 0) continue;
    g.lo = lo;
    items = (a.out + lo - 1) / lo * group_slots;
    if (2 * items >= 3 * static_cast<int64_t>(workspace.sm_count)) break;
  }
  if (items >= (int64_t{1} << 31)) return false;
  g.out_tiles = static_cast<int>((a.out + g.lo - 1) / g.lo);
  // Chunks per stage: one per thread, the buffer (weights + activations) within its budget,
  // whole warps, then evened out over the stages.
  const int per_warp = 32 / g.lo;
  const int column_bytes = g.lo * chunk_bytes + rows * kChunk * static_cast<int>(sizeof(float));
  int stage_chunks = std::min(kGemvMaxThreads / g.lo, kGemvBufferBytes / column_bytes) / per_warp * per_warp;
  stage_chunks = std::max(stage_chunks, per_warp);
  g.stages = (chunks + stage_chunks - 1) / stage_chunks;
  stage_chunks = (chunks + g.stages - 1) / g.stages;
  g.stage_chunks = (stage_chunks + per_warp - 1) / per_warp * per_warp;
  g.row_pitch = g.stage_chunks * chunk_bytes + kGemvPad;
  g.buffer_bytes = g.lo * g.row_pitch + rows * g.stage_chunks * kChunk * static_cast<int>(sizeof(float));
  const int threads = g.lo * g.stage_chunks;
  size_t shared = 0;
  switch (rows) {
    case 1: shared = gemv_shared_bytes<1>(g); break;
    case 2: shared = gemv_shared_bytes<2>(g); break;
    case 4: shared = gemv_shared_bytes<4>(g); break;
    default: shared = gemv_shared_bytes<8>(g); break;
  }
  const void* kernel = nullptr;
  switch (format) {
    case kWeightBF16: kernel = gemv_kernel_for<kWeightBF16>(rows); break;
    case kWeightFP8: kernel = gemv_kernel_for<kWeightFP8>(rows); break;
    default: kernel = gemv_kernel_for<kWeightFP4>(rows); break;
  }
  const int64_t resident = static_cast<int64_t>(gemv_blocks_per_sm(kernel, threads, shared)) * workspace.sm_count;
  const int grid = static_cast<int>(std::max<int64_t>(1, std::min(items, resident)));
  g.slot_stride = grid / g.out_tiles;
  g.tile_stride = grid % g.out_tiles;
  void* params[] = {&a, &g};
  launch_dependent(kernel, dim3(static_cast<unsigned>(grid)), dim3(static_cast<unsigned>(threads)), shared, stream, params);
  return true;
}

template <int FMT>
void launch_format(const LinearArgs& a, int variant, dim3 grid, cudaStream_t stream) {
  switch (variant) {
    case 0: launch_dependent(linear_kernel<FMT, 4, 128, 1, 2>, grid, kThreads, 0, stream, a); break;
    case 1: launch_dependent(linear_kernel<FMT, 16, 64, 1, 4>, grid, kThreads, 0, stream, a); break;
    default: launch_dependent(linear_kernel<FMT, 64, 64, 4, 4>, grid, kThreads, 0, stream, a); break;
  }
}

int variant_rows(int variant) { return variant == 0 ? 4 : (variant == 1 ? 16 : 64); }
int variant_outputs(int variant) { return variant == 0 ? 128 : 64; }

void launch(LinearArgs a, int format, int groups, int64_t rows_per_group, int64_t active_groups,
            const LinearWorkspace& workspace, cudaStream_t stream) {
  if (a.in % kBK != 0) fail("CUDA linear: input size ", a.in, " is not a multiple of ", kBK);
  if (a.total_rows == 0 || a.out == 0) return;
  const int64_t group_slots = a.group_list != nullptr ? active_groups : groups;
  if (launch_gemv(a, format, rows_per_group, group_slots, workspace, stream)) return;
  const int variant = rows_per_group <= 4 ? 0 : (rows_per_group <= 16 ? 1 : 2);
  const int64_t bm = variant_rows(variant);
  const int64_t bn = variant_outputs(variant);
  if (a.x_group_outputs > 0 && a.x_group_outputs % bn != 0) {
    fail("CUDA linear: grouped input needs outputs per group divisible by ", bn, ", got ", a.x_group_outputs);
  }
  const int64_t out_tiles = (a.out + bn - 1) / bn;
  const int64_t row_tiles = std::max<int64_t>(1, (rows_per_group + bm - 1) / bm);
  const int chunks = static_cast<int>((a.in + kChunk - 1) / kChunk);
  const int64_t blocks = out_tiles * row_tiles * active_groups;
  a.splits = 1;
  if (chunks > 1 && blocks < workspace.sm_count &&
      static_cast<size_t>(chunks) * static_cast<size_t>(a.total_rows * a.out) <= workspace.floats) {
    a.splits = chunks;
    a.partial = workspace.partial;
  }
  // With a group list only the busy groups (at most one per slot) get blocks.
  const int64_t group_blocks = a.group_list != nullptr ? active_groups : groups;
  const dim3 grid(static_cast<unsigned>(out_tiles), static_cast<unsigned>(std::min<int64_t>(row_tiles, 65535)),
                  static_cast<unsigned>(group_blocks * a.splits));
  switch (format) {
    case kWeightBF16: launch_format<kWeightBF16>(a, variant, grid, stream); break;
    case kWeightFP8: launch_format<kWeightFP8>(a, variant, grid, stream); break;
    case kWeightFP4: launch_format<kWeightFP4>(a, variant, grid, stream); break;
    default: fail("CUDA linear: unknown weight format ", format);
  }
  LONGCTX_CUDA_CHECK_LAUNCH();
  if (a.splits > 1) {
    const int64_t n = a.total_rows * a.out;
    launch_dependent(linear_finish_kernel, ceil_div_u(n, 256), 256, 0, stream, a.partial, chunks, a.total_rows, a.out, a.y, a.y_stride);
    LONGCTX_CUDA_CHECK_LAUNCH();
  }
}

LinearArgs base_args(const LinearView& w, const float* x, int64_t x_stride, float* y, int64_t y_stride) {
  LinearArgs a{};
  a.weight = w.weight;
  a.scale = w.scale;
  a.out = w.out;
  a.in = w.in;
  a.group_weight_bytes = w.group_weight_bytes;
  a.group_scale_bytes = w.group_scale_bytes;
  a.x = x;
  a.x_stride = x_stride;
  a.y = y;
  a.y_stride = y_stride;
  a.splits = 1;
  return a;
}

__global__ void fp8_simulate_rows_kernel(const float* x, int64_t rows, int64_t cols, int64_t x_stride,
                                         float* out, int64_t out_stride) {
  begin_dependent_kernel();
  const int64_t blocks_per_row = cols / 128;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (index >= rows * blocks_per_row) return;
  const int64_t r = index / blocks_per_row;
  const int64_t b = index % blocks_per_row;
  const int lane = threadIdx.x & 31;
  const float* source = x + r * x_stride + b * 128;
  float values[4];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    values[i] = source[lane + 32 * i];
    amax = fmaxf(amax, fabsf(values[i]));
  }
  const float scale = fp8_scale_from_amax(warp_max(amax));
  float* target = out + r * out_stride + b * 128;
#pragma unroll
  for (int i = 0; i < 4; ++i) target[lane + 32 * i] = fp8_simulate(values[i], scale);
}

}  // namespace

void linear(const LinearView& w, const float* x, int64_t x_stride, int64_t rows, float* y,
            int64_t y_stride, int64_t x_group_outputs, const LinearWorkspace& workspace,
            cudaStream_t stream) {
  if (rows <= 0) return;
  // fp8 weights at prefill sizes. The grouped wo_a, whose activations the reference keeps in
  // bf16: cuBLASLt's bf16 GEMM on the bf16 weight (gemm_bf16_tc.cu), all rows, or else the fp32
  // kernels (never the fp8 path, which would round the activations to e4m3). The others:
  // cuBLASLt's block-scaled fp8 GEMM (gemm_fp8_tc.cu) for all rows but rows % 4, which the fp32
  // kernels below take.
  if (w.format == kWeightFP8 && workspace.tensor_core_min_rows > 0 && rows >= workspace.tensor_core_min_rows) {
    if (x_group_outputs > 0) {
      if (bf16_tc_linear(w, x, x_stride, rows, y, y_stride, x_group_outputs, workspace, stream) == rows) return;
    } else {
      const int64_t done = fp8_tc_linear(w, x, x_stride, rows, y, y_stride, x_group_outputs, workspace, stream);
      if (done == rows) return;
      x += done * x_stride;
      y += done * y_stride;
      rows -= done;
    }
  }
  // bf16 weights at prefill sizes, at least kBf16SplitMinOutputs wide: the activations split into
  // three bf16 terms on bf16 tensor cores (gemm_bf16_split.h), fp32 accuracy, all rows; or else
  // the fp32 kernels.
  if (w.format == kWeightBF16 && x_group_outputs == 0 && w.out >= kBf16SplitMinOutputs &&
      workspace.tensor_core_min_rows > 0 && rows >= workspace.tensor_core_min_rows &&
      bf16_split_linear(w, x, x_stride, rows, y, y_stride, workspace, stream) == rows) {
    return;
  }
  LinearArgs a = base_args(w, x, x_stride, y, y_stride);
  a.rows = rows;
  a.total_rows = rows;
  a.x_group_outputs = x_group_outputs;
  launch(a, w.format, 1, rows, 1, workspace, stream);
}

void linear_fp8(const LinearView& w, const Fp8Activations& x, float* y, int64_t y_stride,
                const LinearWorkspace& workspace, cudaStream_t stream) {
  if (x.rows <= 0) return;
  if (x.width != w.in) fail("CUDA linear_fp8: activations of width ", x.width, " for a weight of in ", w.in);
  if (x.tc_rows > 0 && fp8_tc_multiply(w, x, y, y_stride, workspace, stream) != x.tc_rows) {
    fail("CUDA linear_fp8: the tensor-core GEMM does not take this call (check fp8_tc_supported first)");
  }
  // The tail on the fp32 kernels, from its fp8-simulated rows (as linear() gives them the rows past
  // the tensor cores' multiple of 4).
  const int64_t tail = x.rows - x.tc_rows;
  if (tail <= 0) return;
  LinearArgs a = base_args(w, x.tail, x.tail_stride, y + x.tc_rows * y_stride, y_stride);
  a.rows = tail;
  a.total_rows = tail;
  launch(a, w.format, 1, tail, 1, workspace, stream);
}

void grouped_linear(const LinearView& w, int groups, const int32_t* offsets, const int32_t* counts,
                    int64_t total_slots, const float* x, int64_t x_stride, const int32_t* x_rows,
                    float* y, int64_t y_stride, const LinearWorkspace& workspace,
                    cudaStream_t stream, const int32_t* group_list) {
  if (total_slots <= 0) return;
  if (workspace.tensor_core_min_rows > 0 && total_slots >= workspace.tensor_core_min_rows &&
      grouped_linear_tc(w, groups, offsets, counts, total_slots, x, x_stride, x_rows, y, y_stride, workspace, stream,
                        group_list)) {
    return;
  }
  LinearArgs a = base_args(w, x, x_stride, y, y_stride);
  a.offsets = offsets;
  a.counts = counts;
  a.group_list = group_list;
  a.x_rows = x_rows;
  a.total_rows = total_slots;
  const int64_t active = std::min<int64_t>(groups, total_slots);
  // Rows per busy group, on average; blocks loop over the row tiles of crowded groups.
  const int64_t per_group = (total_slots + active - 1) / active;
  launch(a, w.format, groups, per_group, active, workspace, stream);
}

void fp8_simulate_rows(const float* x, int64_t rows, int64_t cols, int64_t x_stride, float* out,
                       int64_t out_stride, cudaStream_t stream) {
  if (rows <= 0) return;
  if (cols % 128 != 0) fail("fp8 activation simulation: row length ", cols, " is not a multiple of 128");
  const int64_t warps = rows * (cols / 128);
  launch_dependent(fp8_simulate_rows_kernel, ceil_div_u(warps, 8), 256, 0, stream, x, rows, cols, x_stride, out, out_stride);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

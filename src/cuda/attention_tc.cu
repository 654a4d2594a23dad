// Sparse attention with sink on the tensor cores (fast mode, bf16 or fp8 KV pages).
//
// Same keys, inputs and outputs as sparse_attention (attention.cu): q [rows, heads, d] fp32
// (normed, roped), fresh_kv [rows, d] fp32 (already storage-rounded), stored keys in the window
// ring and the compressed pages; out [rows, heads, d] fp32, inverse-roped at the row's position.
// Numerics of the reference's bf16 attention: the query is rounded to bf16, keys are exact in
// bf16 (fp8 e4m3 x power-of-two scale, or bf16), logits S = Q K^T and O = P V run on bf16
// mma.sync m16n8k16 with fp32 accumulation, the probabilities P are rounded to bf16 for P V;
// softmax statistics (max, sum) and the output accumulators stay fp32.
//
// Block (row, group of 64 heads, split of the row's key list), 8 warps. The heads of the group
// are the M dimension (4 m16 tiles; heads past `heads` are zero rows), keys the N dimension:
//  - shared memory: Q [64 heads][512] bf16, key tiles [64 keys][512] bf16 (rows padded to
//    520 halves = 1040 bytes, so ldmatrix rows fall on distinct banks), P [64][72] bf16, the
//    per-head running max (log2 domain, two copies by tile parity) and per-warp row sums;
//    fp8 pages: raw entries [2][64][entry bytes] staged by cp.async, decoded into one bf16 tile;
//    bf16 pages: entries cp.async'ed straight into two bf16 tiles (double buffer);
//  - S: warp w computes heads [16 (w % 4), +16) x keys [32 (w / 4), +32) over d = 512;
//  - softmax: row maxima exchanged through shared memory, P = exp2(S log2e / sqrt(d) - max);
//  - P V: warp w owns heads [32 (w / 4), +32) x dims [128 (w % 4), +128) of O (128 fp32
//    accumulators per thread), rescaled by exp2(old max - new max) per tile.
// One split per row (enough rows to fill the GPU): the epilogue adds the sink, normalizes,
// inverse-ropes and writes out. Several splits: partials [rows][heads][splits][2 + d] (max in
// log2 units, sum, unnormalized output) and a combine launch in split order.
#include <algorithm>

#include "cuda/attention_keys.cuh"
#include "cuda/cuda_check.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kHeads = 64;             // heads per block (M)
constexpr int kKeys = 64;              // keys per tile (N of S, K of P V)
constexpr int kDim = 512;              // the only head_dim supported
constexpr int kRow = kDim + 8;         // padded bf16 row of Q and key tiles
constexpr int kPRow = kKeys + 8;       // padded bf16 row of P
constexpr int kCombineThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async8(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// c += a b: a 16x16 bf16 (row), b 16x8 bf16 (col), c 16x8 fp32.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two floats as bf16 (round to nearest even), the first in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return static_cast<uint32_t>(float_to_bf16_bits(lo)) | (static_cast<uint32_t>(float_to_bf16_bits(hi)) << 16);
}
// Eight fp32 values (exact in bf16 or not) to one 16-byte bf16 chunk.
__device__ __forceinline__ uint4 pack8(const float4& a, const float4& b) {
  return make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
}
// Eight fp8 codes times a power-of-two scale: exact in bf16.
__device__ __forceinline__ uint4 fp8x8_to_bf16(uint2 codes, float scale) {
  uint32_t out[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t word = i < 2 ? codes.x : codes.y;
    const uint16_t pair = static_cast<uint16_t>(word >> (16 * (i & 1)));
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair), __NV_E4M3);
    const float2 f = __half22float2(__half2(h));
    out[i] = (__float_as_uint(f.x * scale) >> 16) | (__float_as_uint(f.y * scale) & 0xffff0000u);
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}


struct Shared {
  uint16_t* q;      // [kHeads][kRow]
  uint16_t* keys;   // [1 or 2][kKeys][kRow]
  uint8_t* raw;     // fp8: [2][kKeys][entry bytes]
  uint16_t* p;      // [kHeads][kPRow]
  float* run_max;   // [2][kHeads], log2 units
  float* tile_max;  // [2][kHeads]
  float* row_sum;   // [2][kHeads]
  const uint8_t** src;  // [2][kKeys]: stored entry, or null
  int32_t* fresh;       // [2][kKeys]: row of fresh_kv, or -1
};

template <bool kFp8>
__host__ __device__ constexpr int64_t shared_bytes(int64_t entry_bytes) {
  return 2 * (static_cast<int64_t>(kHeads) * kRow + (kFp8 ? 1 : 2) * static_cast<int64_t>(kKeys) * kRow +
              kHeads * kPRow) +
         (kFp8 ? 2 * kKeys * entry_bytes : 0) + 6 * kHeads * 4 + 2 * kKeys * 8 + 2 * kKeys * 4;
}

template <bool kFp8>
__device__ __forceinline__ Shared carve(uint8_t* base, int64_t entry_bytes) {
  Shared s;
  s.q = reinterpret_cast<uint16_t*>(base);
  s.keys = s.q + kHeads * kRow;
  uint8_t* next = reinterpret_cast<uint8_t*>(s.keys + (kFp8 ? 1 : 2) * kKeys * kRow);
  s.raw = next;
  if (kFp8) next += 2 * kKeys * entry_bytes;
  s.p = reinterpret_cast<uint16_t*>(next);
  s.run_max = reinterpret_cast<float*>(s.p + kHeads * kPRow);
  s.tile_max = s.run_max + 2 * kHeads;
  s.row_sum = s.tile_max + 2 * kHeads;
  s.src = reinterpret_cast<const uint8_t**>(s.row_sum + 2 * kHeads);
  s.fresh = reinterpret_cast<int32_t*>(s.src + 2 * kKeys);
  return s;
}

// Starts the loads of tile `tile` (keys [key_begin + 64 tile, +64) of the row) into buffer b.
// Thread (key = tid / 4, part = tid % 4) moves a quarter of one key.
template <bool kFp8>
__device__ __forceinline__ void load_tile(const Shared& s, int b, const KvLayerView& kv, const BatchView& batch,
                                          const ChunkInfo& chunk, const RowKeys& rk, int64_t r, int64_t tile_begin,
                                          int64_t key_end, const float* fresh_kv, const int32_t* selected,
                                          int topk_stride) {
  const int kk = threadIdx.x >> 2;
  const int part = threadIdx.x & 3;
  const int64_t j = tile_begin + kk;
  const uint8_t* src = nullptr;
  int32_t fresh = -1;
  if (j < key_end) {
    if (j < rk.n_window) {
      const int32_t p = rk.first + static_cast<int32_t>(j);
      if (p >= chunk.start_pos) {
        fresh = chunk.first_row + p - chunk.start_pos;
      } else {
        src = window_ring_entry(kv, batch, chunk, p);
      }
    } else {
      const int64_t c = j - rk.n_window;
      src = compressed_entry(kv, batch, chunk, selected != nullptr ? selected[r * topk_stride + c] : c);
    }
  }
  if constexpr (kFp8) {
    if (part == 0) {
      s.src[b * kKeys + kk] = src;
      s.fresh[b * kKeys + kk] = fresh;
    }
    if (src != nullptr) {
      uint8_t* dst = s.raw + (static_cast<int64_t>(b) * kKeys + kk) * kv.kv_entry_bytes;
      for (int i = part; i < kv.kv_entry_bytes / 8; i += 4) cp_async8(dst + 8 * i, src + 8 * i);
    }
  } else {
    uint16_t* dst = s.keys + (b * kKeys + kk) * kRow;
    if (src != nullptr) {
#pragma unroll 4
      for (int i = part; i < kDim / 8; i += 4) cp_async16(dst + 8 * i, src + 16 * i);
    } else if (fresh >= 0) {
      const float4* f = reinterpret_cast<const float4*>(fresh_kv + static_cast<int64_t>(fresh) * kDim);
      for (int i = part; i < kDim / 8; i += 4) *reinterpret_cast<uint4*>(dst + 8 * i) = pack8(f[2 * i], f[2 * i + 1]);
    } else {
      for (int i = part; i < kDim / 8; i += 4) *reinterpret_cast<uint4*>(dst + 8 * i) = make_uint4(0, 0, 0, 0);
    }
  }
  cp_async_commit();
}

// fp8 pages: decodes the staged raw entries of buffer b (and the fresh rows) into the bf16 tile.
__device__ __forceinline__ void decode_tile(const Shared& s, int b, const KvLayerView& kv, const float* fresh_kv) {
  const int kk = threadIdx.x >> 2;
  const int part = threadIdx.x & 3;
  const uint8_t* src = s.src[b * kKeys + kk];
  const int32_t fresh = s.fresh[b * kKeys + kk];
  uint16_t* dst = s.keys + kk * kRow;
  const int nope = kDim - kv.rope_dim;
  if (src != nullptr) {
    const uint8_t* raw = s.raw + (static_cast<int64_t>(b) * kKeys + kk) * kv.kv_entry_bytes;
    const uint8_t* scales = raw + nope + 2 * kv.rope_dim;
    for (int i = part; i < kDim / 8; i += 4) {
      const int dim = 8 * i;
      uint4 v;
      if (dim < nope) {
        v = fp8x8_to_bf16(*reinterpret_cast<const uint2*>(raw + dim), e8m0_to_float(scales[dim / 64]));
      } else {
        const uint2* rope = reinterpret_cast<const uint2*>(raw + nope + 2 * (dim - nope));
        const uint2 lo = rope[0], hi = rope[1];
        v = make_uint4(lo.x, lo.y, hi.x, hi.y);
      }
      *reinterpret_cast<uint4*>(dst + dim) = v;
    }
  } else if (fresh >= 0) {
    const float4* f = reinterpret_cast<const float4*>(fresh_kv + static_cast<int64_t>(fresh) * kDim);
    for (int i = part; i < kDim / 8; i += 4) *reinterpret_cast<uint4*>(dst + 8 * i) = pack8(f[2 * i], f[2 * i + 1]);
  } else {
    for (int i = part; i < kDim / 8; i += 4) *reinterpret_cast<uint4*>(dst + 8 * i) = make_uint4(0, 0, 0, 0);
  }
}

template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) attention_tc_kernel(
    KvLayerView kv, BatchView batch, int64_t row_begin, const float* q, const float* fresh_kv,
    const int32_t* selected, const int32_t* selected_counts, int topk_stride, int heads, int window, int splits,
    int64_t keys_per_split, const float* sinks, const float* inv_freq, float* out, float* partial) {
  begin_dependent_kernel();
  extern __shared__ __align__(16) uint8_t shared_raw[];
  const Shared s = carve<kFp8>(shared_raw, kv.kv_entry_bytes);
  const int64_t r = row_begin + blockIdx.x;
  const int h0 = blockIdx.y * kHeads;
  const RowKeys rk = row_keys(kv, batch, r, selected, selected_counts, window);
  const int64_t key_begin = static_cast<int64_t>(blockIdx.z) * keys_per_split;
  if (key_begin >= rk.n_keys) return;
  const int64_t key_end = min(rk.n_keys, key_begin + keys_per_split);
  const int tiles = static_cast<int>((key_end - key_begin + kKeys - 1) / kKeys);
  const ChunkInfo chunk = batch.chunks[batch.row_chunk[r]];
  const float scale_log2 = static_cast<float>(1.0 / sqrt(static_cast<double>(kDim))) * kLog2e;

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2;  // fragment row
  const int c = lane & 3;   // fragment column pair

  load_tile<kFp8>(s, 0, kv, batch, chunk, rk, r, key_begin, key_end, fresh_kv, selected, topk_stride);
  for (int i = threadIdx.x; i < kHeads * kDim / 8; i += kThreads) {
    const int h = i / (kDim / 8);
    const int dim = (i % (kDim / 8)) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (h0 + h < heads) {
      const float4* src = reinterpret_cast<const float4*>(q + ((r * heads) + h0 + h) * kDim + dim);
      v = pack8(src[0], src[1]);
    }
    *reinterpret_cast<uint4*>(s.q + h * kRow + dim) = v;
  }
  if (threadIdx.x < kHeads) s.run_max[threadIdx.x] = -INFINITY;

  // S warp roles and P V warp roles.
  const int s_mt = warp & 3;   // heads [16 s_mt, +16)
  const int s_kh = warp >> 2;  // keys [32 s_kh, +32) of the tile
  const int o_hg = warp >> 2;  // heads [32 o_hg, +32)
  const int o_dq = warp & 3;   // dims [128 o_dq, +128)
  float o[2][16][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int nt = 0; nt < 16; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mi][nt][e] = 0.0f;
  float l_lo = 0.0f, l_hi = 0.0f;  // this warp's share of the sums of rows g and g + 8

  for (int t = 0; t < tiles; ++t) {
    const int64_t tile_begin = key_begin + static_cast<int64_t>(t) * kKeys;
    cp_async_wait_all();
    __syncthreads();  // tile t landed; every warp is done with tile t - 1
    if (t + 1 < tiles) {
      load_tile<kFp8>(s, (t + 1) & 1, kv, batch, chunk, rk, r, tile_begin + kKeys, key_end, fresh_kv, selected,
                      topk_stride);
    }
    if constexpr (kFp8) {
      decode_tile(s, t & 1, kv, fresh_kv);
      __syncthreads();
    }
    const uint16_t* keys = kFp8 ? s.keys : s.keys + (t & 1) * kKeys * kRow;

    // S = Q K^T for 16 heads x 32 keys.
    float sc[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[nt][e] = 0.0f;
    const uint16_t* a_row = s.q + (16 * s_mt + (lane & 7) + ((lane >> 3) & 1) * 8) * kRow + (lane >> 4) * 8;
    const uint16_t* b_row = keys + (32 * s_kh + (lane & 7) + (lane >> 4) * 8) * kRow + ((lane >> 3) & 1) * 8;
#pragma unroll 4
    for (int k0 = 0; k0 < kDim; k0 += 16) {
      uint32_t a[4], b0[4], b1[4];
      ldmatrix_x4(a, a_row + k0);
      ldmatrix_x4(b0, b_row + k0);
      ldmatrix_x4(b1, b_row + 16 * kRow + k0);
      mma_bf16(sc[0], a, b0[0], b0[1]);
      mma_bf16(sc[1], a, b0[2], b0[3]);
      mma_bf16(sc[2], a, b1[0], b1[1]);
      mma_bf16(sc[3], a, b1[2], b1[3]);
    }
    float max_lo = -INFINITY, max_hi = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool valid = tile_begin + 32 * s_kh + 8 * nt + 2 * c + e < key_end;
        sc[nt][e] = valid ? sc[nt][e] * scale_log2 : -INFINITY;
        sc[nt][2 + e] = valid ? sc[nt][2 + e] * scale_log2 : -INFINITY;
        max_lo = fmaxf(max_lo, sc[nt][e]);
        max_hi = fmaxf(max_hi, sc[nt][2 + e]);
      }
    }
#pragma unroll
    for (int offset = 1; offset < 4; offset <<= 1) {
      max_lo = fmaxf(max_lo, __shfl_xor_sync(0xffffffffu, max_lo, offset));
      max_hi = fmaxf(max_hi, __shfl_xor_sync(0xffffffffu, max_hi, offset));
    }
    const int h_lo = 16 * s_mt + g;
    if (c == 0) {
      s.tile_max[s_kh * kHeads + h_lo] = max_lo;
      s.tile_max[s_kh * kHeads + h_lo + 8] = max_hi;
    }
    __syncthreads();
    // Softmax of the tile: every key half sees the same new maxima (the tile has a valid key).
    const float* old_max = s.run_max + (t & 1) * kHeads;
    float* new_max = s.run_max + ((t + 1) & 1) * kHeads;
    const float m_lo = fmaxf(old_max[h_lo], fmaxf(s.tile_max[h_lo], s.tile_max[kHeads + h_lo]));
    const float m_hi = fmaxf(old_max[h_lo + 8], fmaxf(s.tile_max[h_lo + 8], s.tile_max[kHeads + h_lo + 8]));
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const float p0 = exp2f(sc[nt][0] - m_lo), p1 = exp2f(sc[nt][1] - m_lo);
      const float p2 = exp2f(sc[nt][2] - m_hi), p3 = exp2f(sc[nt][3] - m_hi);
      sum_lo += p0 + p1;
      sum_hi += p2 + p3;
      const int col = 32 * s_kh + 8 * nt + 2 * c;
      *reinterpret_cast<uint32_t*>(s.p + h_lo * kPRow + col) = pack_bf16(p0, p1);
      *reinterpret_cast<uint32_t*>(s.p + (h_lo + 8) * kPRow + col) = pack_bf16(p2, p3);
    }
#pragma unroll
    for (int offset = 1; offset < 4; offset <<= 1) {
      sum_lo += __shfl_xor_sync(0xffffffffu, sum_lo, offset);
      sum_hi += __shfl_xor_sync(0xffffffffu, sum_hi, offset);
    }
    l_lo = l_lo * exp2f(old_max[h_lo] - m_lo) + sum_lo;
    l_hi = l_hi * exp2f(old_max[h_lo + 8] - m_hi) + sum_hi;
    if (s_kh == 0 && c == 0) {
      new_max[h_lo] = m_lo;
      new_max[h_lo + 8] = m_hi;
    }
    __syncthreads();

    // O = O exp2(old - new) + P V for 32 heads x 128 dims.
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
      const int h = 32 * o_hg + 16 * mi + g;
      const float corr_lo = exp2f(old_max[h] - new_max[h]);
      const float corr_hi = exp2f(old_max[h + 8] - new_max[h + 8]);
#pragma unroll
      for (int nt = 0; nt < 16; ++nt) {
        o[mi][nt][0] *= corr_lo;
        o[mi][nt][1] *= corr_lo;
        o[mi][nt][2] *= corr_hi;
        o[mi][nt][3] *= corr_hi;
      }
    }
#pragma unroll
    for (int k0 = 0; k0 < kKeys; k0 += 16) {
      uint32_t a[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        ldmatrix_x4(a[mi], s.p + (32 * o_hg + 16 * mi + (lane & 7) + ((lane >> 3) & 1) * 8) * kPRow + k0 +
                               (lane >> 4) * 8);
      }
      const uint16_t* v_row = keys + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * kRow + 128 * o_dq + (lane >> 4) * 8;
#pragma unroll
      for (int np = 0; np < 8; ++np) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_row + 16 * np);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          mma_bf16(o[mi][2 * np], a[mi], b[0], b[1]);
          mma_bf16(o[mi][2 * np + 1], a[mi], b[2], b[3]);
        }
      }
    }
  }

  // Row sums of both key halves; the final maxima sit in run_max[tiles & 1].
  if (c == 0) {
    s.row_sum[s_kh * kHeads + 16 * s_mt + g] = l_lo;
    s.row_sum[s_kh * kHeads + 16 * s_mt + g + 8] = l_hi;
  }
  __syncthreads();
  const float* final_max = s.run_max + (tiles & 1) * kHeads;
  const int nope = kDim - kv.rope_dim;
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int h = 32 * o_hg + 16 * mi + g + 8 * half;
      if (h0 + h >= heads) continue;
      const float m = final_max[h];
      const float l = s.row_sum[h] + s.row_sum[kHeads + h];
      if (splits == 1) {
        // The sink is one more logit with a zero value: it only enlarges the denominator.
        const float inv = 1.0f / (l + exp2f(sinks[h0 + h] * kLog2e - m));
        float* dst = out + (r * heads + h0 + h) * kDim;
#pragma unroll
        for (int nt = 0; nt < 16; ++nt) {
          const int dim = 128 * o_dq + 8 * nt + 2 * c;
          float x = o[mi][nt][2 * half] * inv, y = o[mi][nt][2 * half + 1] * inv;
          if (dim >= nope) rope_pair(&x, &y, rk.pos, inv_freq[(dim - nope) / 2], true);
          *reinterpret_cast<float2*>(dst + dim) = make_float2(x, y);
        }
      } else {
        const int64_t stride = 2 + kDim;
        float* base = partial + ((static_cast<int64_t>(blockIdx.x) * heads + h0 + h) * splits + blockIdx.z) * stride;
        if (o_dq == 0 && c == 0) {
          base[0] = m;
          base[1] = l;
        }
#pragma unroll
        for (int nt = 0; nt < 16; ++nt) {
          const int dim = 128 * o_dq + 8 * nt + 2 * c;
          *reinterpret_cast<float2*>(base + 2 + dim) = make_float2(o[mi][nt][2 * half], o[mi][nt][2 * half + 1]);
        }
      }
    }
  }
}

// One block per (row, head): the splits in order (maxima in log2 units), the sink, the
// inverse RoPE.
__global__ void __launch_bounds__(kCombineThreads) attention_tc_combine_kernel(
    KvLayerView kv, BatchView batch, int64_t row_begin, const int32_t* selected, const int32_t* selected_counts,
    const float* sinks, int heads, int window, int splits, int64_t keys_per_split, const float* partial,
    const float* inv_freq, float* out) {
  begin_dependent_kernel();
  __shared__ float o[kDim];
  __shared__ float weights[1024];
  __shared__ float denominator;
  const int64_t r = row_begin + blockIdx.x;
  const int h = blockIdx.y;
  const RowKeys rk = row_keys(kv, batch, r, selected, selected_counts, window);
  const int used = static_cast<int>((rk.n_keys + keys_per_split - 1) / keys_per_split);
  const int64_t stride = 2 + kDim;
  const float* base = partial + (static_cast<int64_t>(blockIdx.x) * heads + h) * splits * stride;
  if (threadIdx.x == 0) {
    float m = base[0];
    for (int i = 1; i < used; ++i) m = fmaxf(m, base[i * stride]);
    float total = 0.0f;
    for (int i = 0; i < used; ++i) {
      weights[i] = exp2f(base[i * stride] - m);
      total += base[i * stride + 1] * weights[i];
    }
    denominator = total + exp2f(sinks[h] * kLog2e - m);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kDim; i += blockDim.x) {
    float total = 0.0f;
    for (int k = 0; k < used; ++k) total = fmaf(base[k * stride + 2 + i], weights[k], total);
    o[i] = total / denominator;
  }
  __syncthreads();
  float* rope = o + kDim - kv.rope_dim;
  for (int i = threadIdx.x; i < kv.rope_dim / 2; i += blockDim.x) {
    rope_pair(&rope[2 * i], &rope[2 * i + 1], rk.pos, inv_freq[i], true);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kDim; i += blockDim.x) out[(r * heads + h) * kDim + i] = o[i];
}

int sm_count() {
  static int count = [] {
    int device = 0, n = 0;
    LONGCTX_CUDA_CHECK(cudaGetDevice(&device));
    LONGCTX_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return n;
  }();
  return count;
}

template <bool kFp8>
void launch(const KvLayerView& kv, const BatchView& batch, const float* q, const float* fresh_kv,
            const float* sinks, const int32_t* selected, const int32_t* selected_counts, int topk_stride,
            int heads, int window, int64_t max_keys, const float* inv_freq, float* out, float* workspace,
            size_t workspace_floats, cudaStream_t stream) {
  const unsigned head_groups = ceil_div_u(heads, kHeads);
  // Enough blocks for two waves; a split covers whole tiles.
  const int64_t max_splits = std::max<int64_t>(1, (max_keys + kKeys - 1) / kKeys);
  int64_t splits = (2 * static_cast<int64_t>(sm_count()) + batch.rows * head_groups - 1) / (batch.rows * head_groups);
  splits = std::clamp<int64_t>(splits, 1, std::min<int64_t>(max_splits, 1024));
  const int64_t keys_per_split = ((max_keys + splits - 1) / splits + kKeys - 1) / kKeys * kKeys;
  splits = std::max<int64_t>(1, (max_keys + keys_per_split - 1) / keys_per_split);
  int64_t slice = batch.rows;
  if (splits > 1) {
    const size_t per_row = static_cast<size_t>(heads) * static_cast<size_t>(splits) * (kDim + 2);
    slice = std::min<int64_t>(batch.rows, static_cast<int64_t>(workspace_floats / per_row));
    if (slice < 1) fail("CUDA attention: workspace of ", workspace_floats, " floats holds no row (", per_row, " needed)");
  }
  const int64_t shared = shared_bytes<kFp8>(kv.kv_entry_bytes);
  static int64_t allowed_shared = 48 * 1024;  // per instantiation; raised once (never during a capture)
  if (shared > allowed_shared) {
    LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(attention_tc_kernel<kFp8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(shared)));
    allowed_shared = shared;
  }
  for (int64_t begin = 0; begin < batch.rows; begin += slice) {
    const int64_t count = std::min(slice, batch.rows - begin);
    const dim3 grid(static_cast<unsigned>(count), head_groups, static_cast<unsigned>(splits));
    launch_dependent(attention_tc_kernel<kFp8>, grid, kThreads, shared, stream,
        kv, batch, begin, q, fresh_kv, selected, selected_counts, topk_stride, heads, window,
        static_cast<int>(splits), keys_per_split, sinks, inv_freq, out, workspace);
    LONGCTX_CUDA_CHECK_LAUNCH();
    if (splits > 1) {
      launch_dependent(attention_tc_combine_kernel, dim3(static_cast<unsigned>(count), static_cast<unsigned>(heads)), kCombineThreads, 0, stream, kv, batch, begin, selected, selected_counts, sinks, heads, window,
                                                 static_cast<int>(splits), keys_per_split, workspace, inv_freq, out);
      LONGCTX_CUDA_CHECK_LAUNCH();
    }
  }
}

}  // namespace

bool sparse_attention_tc_supported(const KvLayerView& kv) {
  return (kv.kv_dtype == kKvBF16 || kv.kv_dtype == kKvFP8) && kv.head_dim == kDim && kv.rope_dim % 16 == 0 &&
         (kDim - kv.rope_dim) % 64 == 0 && kv.rope_dim > 0;
}

void sparse_attention_tc(const KvLayerView& kv, const BatchView& batch, const float* q,
                         const float* fresh_kv, const float* sinks, const int32_t* selected,
                         const int32_t* selected_counts, int topk_stride, int heads, int window,
                         int64_t max_keys, const float* inv_freq, float* out, float* workspace,
                         size_t workspace_floats, cudaStream_t stream) {
  if (batch.rows <= 0) return;
  if (!sparse_attention_tc_supported(kv)) {
    fail("CUDA tensor-core attention: needs bf16 or fp8 pages and head dim 512 (got dtype ", kv.kv_dtype,
         ", head dim ", kv.head_dim, ", rope ", kv.rope_dim, ")");
  }
  if (kv.kv_dtype == kKvFP8) {
    launch<true>(kv, batch, q, fresh_kv, sinks, selected, selected_counts, topk_stride, heads, window, max_keys,
                 inv_freq, out, workspace, workspace_floats, stream);
  } else {
    launch<false>(kv, batch, q, fresh_kv, sinks, selected, selected_counts, topk_stride, heads, window, max_keys,
                  inv_freq, out, workspace, workspace_floats, stream);
  }
}

}  // namespace longctx::cuda

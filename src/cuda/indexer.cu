// The lightning indexer of ratio-4 layers: scores over the sequence's compressed entries
// through the block table, then the top-k entries per query.
//
// Layout: q [rows, heads, dim] fp32 (roped, Hadamard-rotated, fp4-simulated), weights
// [rows, heads] fp32 (already scaled by dim^-0.5 heads^-0.5); indexer keys as stored in the
// compressed pages (f32 / bf16 / packed e2m1 with per-32 e8m0 scales) at indexer_offset.
// scores [row_count, score_stride]: entry e of row r is visible iff e < (pos_r + 1) / ratio.
//
// Two score kernels, bitwise equal:
// - indexer_scores_kernel (fp32 SIMT; every key dtype and shape): block = (row, 64 entries); the
//   row's q is staged in shared memory, each warp decodes one key at a time and lane l takes
//   heads l, l + 32, ...: total_l = fma(w, relu(q.k), total_l) in head order, then the warp's
//   xor-butterfly sum (offsets 16, 8, 4, 2, 1).
// - indexer_tc_kernel (fp4 keys, 64 heads x 128): int8 tensor cores. Each fp4-simulated q head
//   is an integer vector times one power of two (indexer_pack_q_kernel: per-32 codes x their
//   scale, brought to the head's smallest scale; |int| <= 120 when the head's block scales span
//   <= 2^3), and so is each key (doubled e2m1 codes, |int| <= 96 under the same condition). The
//   dot is then an exact int32 (mma m16n8k32 s8, 4 k-steps), and so is the fp32 kernel's dot
//   (every partial sum is a multiple of the smallest unit and < 2^24 units). With the head's
//   power folded into its weight and the key's applied at the end (exact scalings in the
//   normal range), the head terms and their sum are formed in the fp32 kernel's exact order:
//   per lane l the fma chain over heads l, l + 32, then the butterfly tree. Heads, keys or rows
//   outside the exact conditions (span > 2^3, q not fp4-simulated, extreme exponents, NaN) are
//   computed by the fp32 kernel's code in the same kernel, so the results are always the same.
//   Block = 8 warps over a 256-key shared tile (keys decoded once per block); RB = 8 rows per
//   block (prefill: warp w takes row w, all keys) or RB = 1 (decode: the 8 warps split the tile).
//   The 64 heads of a row sit in one warp's mma rows (head 16 i + g + 8 hh in m-tile i), so lane
//   (g, t) holds heads g, g + 8, ..., g + 56: the chains of lanes g, g + 8, g + 16, g + 24 and
//   the tree levels over lane bits 4, 3 are local; bits 2..0 are shuffles (xor 16, 8, 4).
// - indexer_tc_decode_kernel (fewer than 32 rows: decode steps, a row per sequence): the same tile math
//   (tc_decode_key, tc_score_subtile) as the RB = 1 kernel, so the same bits, but each block
//   stays on one row and walks every gridDim.x-th tile (about one block per SM in all) with the
//   next two tiles' stored keys in flight (cp.async into three stages).
//
// topk_rows: one block of 1024 threads per row. Each entry gets a distinct 64-bit key
// (order_key(score) << 32 | ~index), so the top k are unique and ties go to the lower index.
// Rows of <= 8192 entries are loaded whole into shared memory; longer rows first take a threshold
// from 4096 evenly spaced samples and keep only the entries at or above it (warp ballots). The
// k-th largest candidate is found bit by bit (block counts), the winners are sorted by index
// (bitonic) and written ascending. When the candidates do not fit (or are fewer than k: an
// unlucky sample), the row falls back to the exact 4-pass 8-bit radix select. Steps of <= 32
// rows with a workspace split each row over blocks of 4096 entries instead (topk_split_kernel,
// topk_merge_kernel below): the same indices in the same order.
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kScoreThreads = 256;
constexpr int kEntriesPerBlock = 64;
constexpr int kTopkThreads = 1024;

// LONGCTX_INDEXER_OLD=1: the previous kernels (fp32 SIMT scores, radix top-k) for A/B runs.
bool use_old_kernels() {
  static const bool old = [] {
    const char* text = std::getenv("LONGCTX_INDEXER_OLD");
    return text != nullptr && text[0] == '1';
  }();
  return old;
}

// LONGCTX_INDEXER_FEW_ROWS=0: few-row steps keep the one-tile-per-block scores and the one-block
// top-k (A/B runs; the new kernels give the same results).
bool use_few_row_kernels() {
  static const bool on = [] {
    const char* text = std::getenv("LONGCTX_INDEXER_FEW_ROWS");
    return text == nullptr || text[0] != '0';
  }();
  return on;
}

int sm_count() {
  static const int count = [] {
    int device = 0, value = 0;
    LONGCTX_CUDA_CHECK(cudaGetDevice(&device));
    LONGCTX_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, device));
    return value;
  }();
  return count;
}

__global__ void __launch_bounds__(kScoreThreads) indexer_scores_kernel(
    KvLayerView kv, BatchView batch, int64_t row_begin, const float* q, const float* weights,
    int heads, int dim, float* scores, int64_t score_stride) {
  extern __shared__ float shared[];
  float* qs = shared;                               // [heads][dim + 1]
  float* ws = qs + heads * (dim + 1);               // [heads]
  float* keys = ws + heads;                         // [warps][dim]
  const int64_t r = row_begin + blockIdx.x;
  const int32_t pos = batch.row_pos[r];
  const int64_t visible = (pos + 1) / kv.ratio;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * kEntriesPerBlock;
  if (first >= visible) return;
  const ChunkInfo chunk = batch.chunks[batch.row_chunk[r]];
  for (int i = threadIdx.x; i < heads * dim; i += blockDim.x) {
    qs[(i / dim) * (dim + 1) + i % dim] = q[r * heads * dim + i];
  }
  for (int h = threadIdx.x; h < heads; h += blockDim.x) ws[h] = weights[r * heads + h];
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float* key = keys + warp * dim;
  const int64_t last = min(visible, first + kEntriesPerBlock);
  for (int64_t e = first + warp; e < last; e += kScoreThreads / 32) {
    const uint8_t* stored = indexer_key(kv, batch, chunk, e);
    for (int i = lane; i < dim; i += 32) key[i] = decode_key_element(stored, i, kv.key_dtype, dim);
    __syncwarp();
    float total = 0.0f;
    for (int h = lane; h < heads; h += 32) {
      const float* qh = qs + h * (dim + 1);
      float dot = 0.0f;
      for (int i = 0; i < dim; ++i) dot = fmaf(qh[i], key[i], dot);
      total = fmaf(ws[h], fmaxf(dot, 0.0f), total);
    }
    total = warp_sum(total);
    if (lane == 0) scores[static_cast<int64_t>(blockIdx.x) * score_stride + e] = total;
    __syncwarp();
  }
}

// ---------------------------------------------------------------- tensor-core scores

constexpr int kTcHeads = 64;
constexpr int kTcDim = 128;
constexpr int kTcKeyBytes = kTcDim / 2 + kTcDim / 32;  // 68: packed codes, then 4 e8m0 scales
constexpr int kTcKeyWords = kTcKeyBytes / 4;           // 17
constexpr int kTcTile = 256;                           // keys per shared tile
constexpr int kTcRowStride = kTcDim + 16;              // int8 key row: 144 bytes, conflict-free B loads
constexpr int kTcMaxSpan = 3;                          // block-scale span (log2) of an exact vector
constexpr int kTcMinExp = -40, kTcMaxExp = 30;         // unit exponents kept on the fast path
constexpr int64_t kPackBytesPerRow = kTcHeads * kTcDim + kTcHeads * 4 + 16;  // q8, w', flag

struct PackedRows {
  int8_t* q8;   // [rows][64][128]
  float* wq;    // [rows][64]: w * 2^eq
  int32_t* ok;  // [rows]: 1 when every head is exact on the int8 path
};
__host__ __device__ inline PackedRows packed_rows(void* workspace, int64_t rows) {
  uint8_t* base = static_cast<uint8_t*>(workspace);
  return {reinterpret_cast<int8_t*>(base), reinterpret_cast<float*>(base + rows * kTcHeads * kTcDim),
          reinterpret_cast<int32_t*>(base + rows * (kTcHeads * kTcDim + kTcHeads * 4))};
}

__device__ __forceinline__ float pow2_exact(int e) { return __uint_as_float(static_cast<uint32_t>(e + 127) << 23); }

// One block (8 warps) per row; warp w packs heads w, w + 8, ...; lane l holds dims 4l..4l+3.
__global__ void __launch_bounds__(256) indexer_pack_q_kernel(const float* q, const float* weights, int64_t row_begin,
                                                             PackedRows packed) {
  const int64_t i = blockIdx.x;
  const int64_t r = row_begin + i;
  const int lane = threadIdx.x & 31;
  bool ok = true;
  for (int h = threadIdx.x >> 5; h < kTcHeads; h += 8) {
    const float4 v = reinterpret_cast<const float4*>(q + (r * kTcHeads + h) * kTcDim)[lane];
    float m = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 4));
    // Unit of the block: 2^(floor(log2 amax) - 3) (an fp4 block's codes are multiples of scale/2).
    const int biased = static_cast<int>((__float_as_uint(m) >> 23) & 0xffu);
    bool good = !(m > 0.0f) || (biased > 0 && biased < 255);  // zero, or normal and finite
    const int unit = m > 0.0f ? biased - 127 - 3 : 1000;
    int low = unit, high = m > 0.0f ? unit : -1000;
    low = min(low, __shfl_xor_sync(0xffffffffu, low, 8));
    low = min(low, __shfl_xor_sync(0xffffffffu, low, 16));
    high = max(high, __shfl_xor_sync(0xffffffffu, high, 8));
    high = max(high, __shfl_xor_sync(0xffffffffu, high, 16));
    const int eq = low == 1000 ? 0 : low;  // an all-zero head: any unit
    if (low != 1000) good = good && high - low <= kTcMaxSpan && eq >= kTcMinExp && eq <= kTcMaxExp;
    const float inv = pow2_exact(-max(min(eq, 100), -100));
    const float values[4] = {v.x, v.y, v.z, v.w};
    uint32_t word = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float scaled = values[j] * inv;
      const int n = __float2int_rn(scaled);
      good = good && static_cast<float>(n) == scaled && n >= -127 && n <= 127;
      word |= (static_cast<uint32_t>(n) & 0xffu) << (8 * j);
    }
    reinterpret_cast<uint32_t*>(packed.q8 + (i * kTcHeads + h) * kTcDim)[lane] = word;
    const float w = weights[r * kTcHeads + h];
    const float wq = w * pow2_exact(max(min(eq, 100), -100));
    const float a = fabsf(wq);
    good = good && (wq == 0.0f || (a >= 0x1p-60f && a <= 0x1p60f));
    if (lane == 0) packed.wq[i * kTcHeads + h] = wq;
    ok = ok && __all_sync(0xffffffffu, good);
  }
  ok = __syncthreads_and(ok);
  if (threadIdx.x == 0) packed.ok[i] = ok ? 1 : 0;
}

__device__ __forceinline__ void mma_s8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                       uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// relu of an int32 |D| < 2^22 as a float: 1.5 * 2^23 + D by the bits, clamp, subtract (exact).
__device__ __forceinline__ float relu_int(int d) {
  const float x = __int_as_float(d + 0x4B400000);
  return fmaxf(x, 12582912.0f) - 12582912.0f;
}

// The fp32 kernel's score of one key for one row (whole warp; lane 0's value is the result).
__device__ float warp_score_fp32(const float* q_row, const float* w_row, const uint8_t* key) {
  const int lane = threadIdx.x & 31;
  float total = 0.0f;
  for (int h = lane; h < kTcHeads; h += 32) {
    const float* qh = q_row + h * kTcDim;
    float dot = 0.0f;
    for (int i = 0; i < kTcDim; ++i) dot = fmaf(qh[i], decode_key_element(key, i, kKeyFP4, kTcDim), dot);
    total = fmaf(w_row[h], fmaxf(dot, 0.0f), total);
  }
  return warp_sum(total);
}

// One thread decodes one key: its stored words `raw` (64 code bytes, 4 e8m0 scales) into doubled
// e2m1 codes shifted to the key's smallest scale (int8, 128 bytes at out_bytes); returns 2^ek, or 0
// when the key is off the exact path.
__device__ __forceinline__ float tc_decode_key(const uint32_t* raw, int8_t* out_bytes) {
  const uint32_t scales = raw[16];
  int low = 1000, high = -1000;
  bool exact = true;
  int exps[4];
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    exps[b] = static_cast<int>((scales >> (8 * b)) & 0xffu);
    const bool nonzero = ((raw[4 * b] | raw[4 * b + 1] | raw[4 * b + 2] | raw[4 * b + 3]) & 0x77777777u) != 0;
    if (exps[b] == 0xff) exact = false;  // NaN scale
    if (nonzero) {
      low = min(low, exps[b]);
      high = max(high, exps[b]);
    }
  }
  if (low == 1000) low = high = 128;  // all-zero key
  const int ek = low - 128;           // value = (2 code) 2^(E - 128)
  exact = exact && high - low <= kTcMaxSpan && ek >= kTcMinExp && ek <= kTcMaxExp;
  const float key_scale = exact ? pow2_exact(ek) : 0.0f;
  uint32_t* out = reinterpret_cast<uint32_t*>(out_bytes);
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    const int shift = exact ? min(max(exps[b] - low, 0), kTcMaxSpan) : 0;
    const uint32_t pos_lo = 0x03020100u << shift, pos_hi = 0x0C080604u << shift;
    const uint32_t neg_lo = (~pos_lo + 0x01010100u) & 0xffffff00u, neg_hi = ~pos_hi + 0x01010101u;
    uint32_t words[8];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t codes = raw[4 * b + j];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const uint32_t c = codes >> (16 * half);
        const uint32_t mag = c & 0x7777u;
        const uint32_t p = __byte_perm(pos_lo, pos_hi, mag);
        const uint32_t n = __byte_perm(neg_lo, neg_hi, mag);
        words[2 * j + half] = __byte_perm(p, n, 0x3210u | ((c >> 1) & 0x4444u));
      }
    }
    uint4* dst = reinterpret_cast<uint4*>(out + 8 * b);
    dst[0] = make_uint4(words[0], words[1], words[2], words[3]);
    dst[1] = make_uint4(words[4], words[5], words[6], words[7]);
  }
  return key_scale;
}

// One warp scores the 32 keys of sub-tile `sub` of a decoded tile (keys/key_scale/raw: the tile's
// int8 rows, scales and stored words) for one row (A fragments a, weights wq) into out_row[tile + ...];
// keys at or past `visible` are skipped, keys off the exact path take the fp32 code.
__device__ __forceinline__ void tc_score_subtile(const uint32_t (&a)[4][4][4], const float (&wq)[4][2], bool row_exact,
                                                 const int8_t* keys, const float* key_scale, const uint32_t* raw,
                                                 int sub, int64_t tile, int64_t my_visible, float* out_row,
                                                 const float* q_row, const float* w_row) {
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int64_t sub_first = tile + sub * 32;
  if (row_exact) {
    int acc[4][4][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int nj = 0; nj < 4; ++nj)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[mi][nj][c] = 0;
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
#pragma unroll
      for (int nj = 0; nj < 4; ++nj) {
        const int8_t* brow = keys + (sub * 32 + 8 * nj + g) * kTcRowStride + 32 * ks + 4 * t;
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(brow);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(brow + 16);
#pragma unroll
        for (int mi = 0; mi < 4; ++mi)
          mma_s8(acc[mi][nj], a[mi][ks][0], a[mi][ks][1], a[mi][ks][2], a[mi][ks][3], b0, b1);
      }
    }
    // Per key slot s = 2 nj + c: the chains of lanes g + 8 m (m = 2 i + hh, heads +32 at i + 2).
    float v[8];
#pragma unroll
    for (int nj = 0; nj < 4; ++nj) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        float chain[4];
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const int mi = m >> 1, hh = m & 1;
          const float first = fmaf(wq[mi][hh], relu_int(acc[mi][nj][c + 2 * hh]), 0.0f);
          chain[m] = fmaf(wq[mi + 2][hh], relu_int(acc[mi + 2][nj][c + 2 * hh]), first);
        }
        v[2 * nj + c] = (chain[0] + chain[2]) + (chain[1] + chain[3]);  // lane bits 4, then 3
      }
    }
    // Lane bits 2, 1, 0 of the fp32 kernel are g's bits: xor 16, 8, 4, halving the slots.
    float v4[4], v2[2];
    const bool up2 = (g & 4) != 0, up1 = (g & 2) != 0, up0 = (g & 1) != 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float send = up2 ? v[j] : v[j + 4];
      const float keep = up2 ? v[j + 4] : v[j];
      v4[j] = keep + __shfl_xor_sync(0xffffffffu, send, 16);
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float send = up1 ? v4[j] : v4[j + 2];
      const float keep = up1 ? v4[j + 2] : v4[j];
      v2[j] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
    }
    const float send = up0 ? v2[0] : v2[1];
    const float keep = up0 ? v2[1] : v2[0];
    const float total = keep + __shfl_xor_sync(0xffffffffu, send, 4);
    // Slot g = 2 nj + c holds key 8 nj + 2 t + c.
    const int key = sub * 32 + 8 * (g >> 1) + 2 * t + (g & 1);
    const int64_t e = tile + key;
    const float scale = key_scale[key];
    if (e < my_visible && scale != 0.0f) out_row[e] = total * scale;
    unsigned slow = __ballot_sync(0xffffffffu, e < my_visible && scale == 0.0f);
    while (slow != 0u) {
      const int l = __ffs(slow) - 1;
      slow &= slow - 1;
      const int slow_key = sub * 32 + 8 * (l >> 3) + 2 * (l & 3) + ((l >> 2) & 1);
      const float value = warp_score_fp32(q_row, w_row,
                                          reinterpret_cast<const uint8_t*>(raw + slow_key * kTcKeyWords));
      if (lane == 0) out_row[tile + slow_key] = value;
    }
  } else {
    const int64_t last = min(my_visible, sub_first + 32);
    for (int64_t e = sub_first; e < last; ++e) {
      const float value = warp_score_fp32(q_row, w_row,
                                          reinterpret_cast<const uint8_t*>(raw + (e - tile) * kTcKeyWords));
      if (lane == 0) out_row[e] = value;
    }
  }
}

struct TcShared {
  uint32_t raw[kTcTile * kTcKeyWords];                // the stored keys of the tile
  alignas(16) int8_t keys[kTcTile * kTcRowStride];   // int8 keys, row per key
  float key_scale[kTcTile];                           // 2^ek; 0: key off the exact path
  const uint8_t* key_ptr[kTcTile];
  int32_t row_chunk[8];
  int64_t row_visible[8];
};

template <int RB>
__global__ void __launch_bounds__(kScoreThreads, 1) indexer_tc_kernel(KvLayerView kv, BatchView batch, int64_t row_begin,
                                                                      int64_t row_count, const float* q,
                                                                      const float* weights, PackedRows packed,
                                                                      float* scores, int64_t score_stride,
                                                                      int chunk_tiles) {
  extern __shared__ __align__(16) uint8_t shared_bytes[];
  TcShared& s = *reinterpret_cast<TcShared*>(shared_bytes);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t group_first = static_cast<int64_t>(blockIdx.y) * RB;  // index into the slice
  const int64_t key_first = static_cast<int64_t>(blockIdx.x) * chunk_tiles * kTcTile;
  if (threadIdx.x < RB) {
    const int64_t i = group_first + threadIdx.x;
    if (i < row_count) {
      const int64_t r = row_begin + i;
      s.row_chunk[threadIdx.x] = batch.row_chunk[r];
      s.row_visible[threadIdx.x] = (batch.row_pos[r] + 1) / kv.ratio;
    } else {
      s.row_chunk[threadIdx.x] = -1;
      s.row_visible[threadIdx.x] = 0;
    }
  }
  __syncthreads();

  // This warp's row and key group.
  constexpr int kGroups = 8 / RB;
  const int my_slot = warp % RB;
  const int my_group = warp / RB;
  const int64_t my_i = group_first + my_slot;
  const int64_t my_visible = s.row_visible[my_slot];
  const int my_chunk = s.row_chunk[my_slot];
  const bool row_live = my_chunk >= 0 && my_visible > key_first;
  const int64_t my_r = row_begin + my_i;

  // A fragments (the row's 64 x 128 int8 q) and the weights of this lane's 8 heads.
  uint32_t a[4][4][4];
  float wq[4][2];
  bool row_exact = false;
  if (row_live) {
    row_exact = packed.ok[my_i] != 0;
    const int8_t* q8 = packed.q8 + my_i * kTcHeads * kTcDim;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        const int8_t* top = q8 + (16 * mi + g) * kTcDim + 32 * ks + 4 * t;
        const int8_t* bottom = top + 8 * kTcDim;
        a[mi][ks][0] = *reinterpret_cast<const uint32_t*>(top);
        a[mi][ks][1] = *reinterpret_cast<const uint32_t*>(bottom);
        a[mi][ks][2] = *reinterpret_cast<const uint32_t*>(top + 16);
        a[mi][ks][3] = *reinterpret_cast<const uint32_t*>(bottom + 16);
      }
      wq[mi][0] = packed.wq[my_i * kTcHeads + 16 * mi + g];
      wq[mi][1] = packed.wq[my_i * kTcHeads + 16 * mi + 8 + g];
    }
  }

  // One pass per distinct chunk (sequence) among the block's rows: keys go through its table.
  for (int slot = 0; slot < RB; ++slot) {
    const int chunk_id = s.row_chunk[slot];
    if (chunk_id < 0) continue;
    bool seen = false;
    int64_t visible = 0;
    for (int j = 0; j < RB; ++j) {
      if (s.row_chunk[j] == chunk_id) {
        if (j < slot) seen = true;
        visible = max(visible, s.row_visible[j]);
      }
    }
    if (seen) continue;
    const int64_t key_end = min(visible, key_first + static_cast<int64_t>(chunk_tiles) * kTcTile);
    const ChunkInfo chunk = batch.chunks[chunk_id];
    const bool mine = row_live && my_chunk == chunk_id;
    for (int64_t tile = key_first; tile < key_end; tile += kTcTile) {
      const int tile_keys = static_cast<int>(min(static_cast<int64_t>(kTcTile), key_end - tile));
      __syncthreads();  // the previous tile's readers are done
      {
        const int k = threadIdx.x;
        s.key_ptr[k] = k < tile_keys ? indexer_key(kv, batch, chunk, tile + k) : nullptr;
      }
      __syncthreads();
      for (int w = threadIdx.x; w < kTcTile * kTcKeyWords; w += kScoreThreads) {
        const int k = w / kTcKeyWords;
        const uint8_t* p = s.key_ptr[k];
        s.raw[w] = p != nullptr ? reinterpret_cast<const uint32_t*>(p)[w - k * kTcKeyWords] : 0u;
      }
      __syncthreads();
      {
        const int k = threadIdx.x;
        s.key_scale[k] = tc_decode_key(s.raw + k * kTcKeyWords, s.keys + k * kTcRowStride);
      }
      __syncthreads();
      if (!mine) continue;
      // This warp's sub-tiles of 32 keys.
      for (int sub = my_group; sub * 32 < tile_keys; sub += kGroups) {
        if (tile + sub * 32 >= my_visible) break;
        tc_score_subtile(a, wq, row_exact, s.keys, s.key_scale, s.raw, sub, tile, my_visible,
                         scores + my_i * score_stride, q + my_r * kTcHeads * kTcDim, weights + my_r * kTcHeads);
      }
    }
  }
}

// ---------------------------------------------------------------- tensor-core scores, few rows

// Decode (few rows, each its own sequence): block = (row, every gridDim.x-th tile of it), the
// same tile math as indexer_tc_kernel<1> (bitwise the same scores) but persistent over its tiles
// with the stored keys of the next two tiles in flight (cp.async, three stages), so that a row's
// keys stream at HBM speed instead of one exposed load latency per 256-key tile.
constexpr int kDecStages = 3;

struct TcDecodeShared {
  alignas(16) uint32_t raw[kDecStages][kTcTile * kTcKeyWords];
  alignas(16) int8_t keys[kTcTile * kTcRowStride];
  float key_scale[kTcTile];
};

__device__ __forceinline__ uint32_t shared_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(shared_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Starts the copy of the stored keys [tile, tile + tile_keys) into `raw` (key k at k * 17 words).
// vector: keys come in 16-byte-aligned runs of 4 within a page (272 bytes = 17 x 16).
__device__ __forceinline__ void tc_issue_tile(const KvLayerView& kv, const BatchView& batch, const ChunkInfo& chunk,
                                              int64_t tile, int tile_keys, uint32_t* raw, bool vector) {
  if (vector) {
    for (int x = threadIdx.x; x < (kTcTile / 4) * kTcKeyWords; x += kScoreThreads) {
      const int group = x / kTcKeyWords, piece = x - group * kTcKeyWords;
      if (4 * group >= tile_keys) break;
      const uint8_t* src = indexer_key(kv, batch, chunk, tile + 4 * group) + 16 * piece;
      cp_async16(raw + 4 * group * kTcKeyWords + 4 * piece, src);
    }
  } else {
    for (int x = threadIdx.x; x < kTcTile * kTcKeyWords; x += kScoreThreads) {
      const int k = x / kTcKeyWords, word = x - k * kTcKeyWords;
      if (k >= tile_keys) break;
      cp_async4(raw + x, indexer_key(kv, batch, chunk, tile + k) + 4 * word);
    }
  }
}

__global__ void __launch_bounds__(kScoreThreads, 1) indexer_tc_decode_kernel(KvLayerView kv, BatchView batch,
                                                                             int64_t row_begin, const float* q,
                                                                             const float* weights, PackedRows packed,
                                                                             float* scores, int64_t score_stride,
                                                                             bool vector) {
  extern __shared__ __align__(16) uint8_t shared_bytes[];
  TcDecodeShared& s = *reinterpret_cast<TcDecodeShared*>(shared_bytes);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t my_i = blockIdx.y;
  const int64_t my_r = row_begin + my_i;
  const int64_t visible = (batch.row_pos[my_r] + 1) / kv.ratio;
  const int64_t tiles = (visible + kTcTile - 1) / kTcTile;
  if (static_cast<int64_t>(blockIdx.x) >= tiles) return;
  const int count = static_cast<int>((tiles - blockIdx.x + gridDim.x - 1) / gridDim.x);  // this block's tiles
  const ChunkInfo chunk = batch.chunks[batch.row_chunk[my_r]];
  const auto tile_of = [&](int m) { return (static_cast<int64_t>(blockIdx.x) + static_cast<int64_t>(m) * gridDim.x) * kTcTile; };
  const auto issue = [&](int m) {
    if (m < count) {
      const int64_t tile = tile_of(m);
      tc_issue_tile(kv, batch, chunk, tile, static_cast<int>(min(static_cast<int64_t>(kTcTile), visible - tile)),
                    s.raw[m % kDecStages], vector);
    }
    cp_async_commit();
  };
  issue(0);
  issue(1);

  // A fragments (the row's 64 x 128 int8 q) and the weights of this lane's 8 heads.
  uint32_t a[4][4][4];
  float wq[4][2];
  const bool row_exact = packed.ok[my_i] != 0;
  const int8_t* q8 = packed.q8 + my_i * kTcHeads * kTcDim;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      const int8_t* top = q8 + (16 * mi + g) * kTcDim + 32 * ks + 4 * t;
      const int8_t* bottom = top + 8 * kTcDim;
      a[mi][ks][0] = *reinterpret_cast<const uint32_t*>(top);
      a[mi][ks][1] = *reinterpret_cast<const uint32_t*>(bottom);
      a[mi][ks][2] = *reinterpret_cast<const uint32_t*>(top + 16);
      a[mi][ks][3] = *reinterpret_cast<const uint32_t*>(bottom + 16);
    }
    wq[mi][0] = packed.wq[my_i * kTcHeads + 16 * mi + g];
    wq[mi][1] = packed.wq[my_i * kTcHeads + 16 * mi + 8 + g];
  }
  const float* q_row = q + my_r * kTcHeads * kTcDim;
  const float* w_row = weights + my_r * kTcHeads;
  float* out_row = scores + my_i * score_stride;

  for (int m = 0; m < count; ++m) {
    __syncthreads();  // the readers of tile m - 1 (keys, its raw stage) are done
    issue(m + 2);
    cp_async_wait<2>();  // this thread's copies of tile m have landed
    __syncthreads();
    const uint32_t* raw = s.raw[m % kDecStages];
    {
      const int k = threadIdx.x;
      s.key_scale[k] = tc_decode_key(raw + k * kTcKeyWords, s.keys + k * kTcRowStride);
    }
    __syncthreads();
    const int64_t tile = tile_of(m);
    // Warp w takes the w-th 32-key sub-tile (as indexer_tc_kernel<1>).
    if (tile + warp * 32 < visible) {
      tc_score_subtile(a, wq, row_exact, s.keys, s.key_scale, raw, warp, tile, visible, out_row, q_row, w_row);
    }
  }
}

bool tc_shape(const KvLayerView& kv, int heads, int dim) {
  return kv.key_dtype == kKeyFP4 && heads == kTcHeads && dim == kTcDim && kv.indexer_key_bytes == kTcKeyBytes &&
         kv.indexer_offset % 4 == 0 && kv.compressed_page_bytes % 4 == 0;
}

// ---------------------------------------------------------------- top-k

// Orderable key: larger float -> larger unsigned; -0 counts as +0.
__device__ __forceinline__ uint32_t order_key(float value) {
  if (value == 0.0f) value = 0.0f;
  const uint32_t bits = __float_as_uint(value);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Exclusive prefix sum over the block (kTopkThreads threads); *total gets the block total.
__device__ int block_exclusive_scan(int value, int* warp_totals, int* total) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  int inclusive = value;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  __syncthreads();
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int w = lane < kTopkThreads / 32 ? warp_totals[lane] : 0;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int other = __shfl_up_sync(0xffffffffu, w, offset);
      if (lane >= offset) w += other;
    }
    warp_totals[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  const int before = warp > 0 ? warp_totals[warp - 1] : 0;
  *total = warp_totals[kTopkThreads / 32 - 1];
  return before + inclusive - value;
}

// The exact 4-pass radix select of one row (n > k) by the whole block.
__device__ void radix_topk_row(const float* row, int64_t n, int k, int32_t* out) {
  __shared__ int histogram[256];
  __shared__ int warp_totals[32];
  __shared__ uint32_t chosen_prefix;
  __shared__ int chosen_remaining;
  uint32_t prefix = 0;
  uint32_t mask = 0;
  int remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) histogram[b] = 0;
    __syncthreads();
    for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
      const uint32_t key = order_key(row[e]);
      if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & 0xffu], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = 0;
      int bin = 255;
      for (; bin > 0; --bin) {
        if (above + histogram[bin] >= remaining) break;
        above += histogram[bin];
      }
      chosen_prefix = prefix | (static_cast<uint32_t>(bin) << shift);
      chosen_remaining = remaining - above;
    }
    __syncthreads();
    prefix = chosen_prefix;
    remaining = chosen_remaining;
    mask |= 0xffu << shift;
    __syncthreads();
  }
  // prefix is the k-th largest key; take everything above it and the first `remaining` equal.
  int written = 0;
  int equal_before = 0;
  for (int64_t tile = 0; tile < n; tile += blockDim.x) {
    const int64_t e = tile + threadIdx.x;
    const uint32_t key = e < n ? order_key(row[e]) : 0u;
    const int is_equal = e < n && key == prefix;
    int equal_total = 0;
    const int equal_rank = equal_before + block_exclusive_scan(is_equal, warp_totals, &equal_total);
    const int take = e < n && (key > prefix || (is_equal && equal_rank < remaining));
    int take_total = 0;
    const int slot = written + block_exclusive_scan(take, warp_totals, &take_total);
    if (take) out[slot] = static_cast<int32_t>(e);
    written += take_total;
    equal_before += equal_total;
  }
}

__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const float* scores, int64_t score_stride,
                                                            const int32_t* row_pos, int64_t row_begin,
                                                            int ratio, int topk, int32_t* selected,
                                                            int32_t* counts) {
  const int64_t i = blockIdx.x;
  const int64_t n = (row_pos[row_begin + i] + 1) / ratio;
  const int k = static_cast<int>(min(static_cast<int64_t>(topk), n));
  int32_t* out = selected + i * topk;
  if (threadIdx.x == 0) counts[i] = k;
  if (n <= topk) {
    for (int64_t e = threadIdx.x; e < n; e += blockDim.x) out[e] = static_cast<int32_t>(e);
    return;
  }
  radix_topk_row(scores + i * score_stride, n, k, out);
}

constexpr int kCandidates = 8192;   // shared candidates (8-byte keys)
constexpr int kMaxSorted = 4096;    // largest k of the fast path
constexpr int kSamples = 4096;

// Sum of one int per thread over the block; `buffer` [2][32] alternates between calls (`parity`).
__device__ __forceinline__ int block_count(int value, int* buffer, int& parity) {
  const int lane = threadIdx.x & 31;
  int* totals = buffer + 32 * parity;
  parity ^= 1;
  value = __reduce_add_sync(0xffffffffu, value);
  if (lane == 0) totals[threadIdx.x >> 5] = value;
  __syncthreads();
  return __reduce_add_sync(0xffffffffu, totals[lane]);
}

__global__ void __launch_bounds__(kTopkThreads) topk_select_kernel(const float* scores, int64_t score_stride,
                                                                   const int32_t* row_pos, int64_t row_begin,
                                                                   int ratio, int topk, int32_t* selected,
                                                                   int32_t* counts) {
  extern __shared__ __align__(16) uint8_t shared_bytes[];
  uint64_t* candidates = reinterpret_cast<uint64_t*>(shared_bytes);               // [kCandidates]
  int32_t* sorted = reinterpret_cast<int32_t*>(candidates + kCandidates);         // [kMaxSorted]
  __shared__ int reduce_buffer[64];
  __shared__ int candidate_count;
  __shared__ int sorted_count;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t i = blockIdx.x;
  const int64_t n = (row_pos[row_begin + i] + 1) / ratio;
  const int k = static_cast<int>(min(static_cast<int64_t>(topk), n));
  int32_t* out = selected + i * topk;
  if (threadIdx.x == 0) counts[i] = k;
  if (n <= topk) {
    for (int64_t e = threadIdx.x; e < n; e += blockDim.x) out[e] = static_cast<int32_t>(e);
    return;
  }
  const float* row = scores + i * score_stride;
  int parity = 0;
  if (threadIdx.x == 0) {
    candidate_count = 0;
    sorted_count = 0;
  }
  // Lowest order key kept as a candidate.
  uint32_t threshold = 0;
  if (n > kCandidates) {
    uint32_t sample[kSamples / kTopkThreads];
#pragma unroll
    for (int j = 0; j < kSamples / kTopkThreads; ++j) {
      const int64_t e = (static_cast<int64_t>(j * kTopkThreads + threadIdx.x) * n) / kSamples;
      sample[j] = order_key(row[e]);
    }
    // The rank-th largest sample: about 2k + 16 / 4096 of the row at or above it.
    const int64_t rank = min(static_cast<int64_t>(kSamples), 2 * static_cast<int64_t>(k) * kSamples / n + 16);
    uint32_t answer = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t trial = answer | (1u << bit);
      int count = 0;
#pragma unroll
      for (int j = 0; j < kSamples / kTopkThreads; ++j) count += sample[j] >= trial;
      if (block_count(count, reduce_buffer, parity) >= rank) answer = trial;
    }
    threshold = answer;
  }
  __syncthreads();
  // Candidates: every entry whose key is >= threshold, slots reserved per warp.
  for (int64_t base = static_cast<int64_t>(warp) * 32; base < n; base += 4 * kTopkThreads) {
    float values[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t e = base + j * kTopkThreads + lane;
      values[j] = e < n ? row[e] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t e = base + j * kTopkThreads + lane;
      const uint32_t key = order_key(values[j]);
      const bool keep = e < n && key >= threshold;
      const unsigned ballot = __ballot_sync(0xffffffffu, keep);
      if (ballot == 0u) continue;
      int start = 0;
      if (lane == 0) start = atomicAdd(&candidate_count, __popc(ballot));
      start = __shfl_sync(0xffffffffu, start, 0);
      const int slot = start + __popc(ballot & ((1u << lane) - 1u));
      if (keep && slot < kCandidates)
        candidates[slot] = (static_cast<uint64_t>(key) << 32) | (0xffffffffu - static_cast<uint32_t>(e));
    }
  }
  __syncthreads();
  const int total = candidate_count;
  const int padded = k <= 1 ? 1 : 1 << (32 - __clz(k - 1));
  if (total < k || total > kCandidates || padded > kMaxSorted) {
    radix_topk_row(row, n, k, out);
    return;
  }
  // The k-th largest candidate key, bit by bit (all keys are distinct).
  uint64_t answer = 0;
  for (int bit = 63; bit >= 0; --bit) {
    const uint64_t trial = answer | (uint64_t{1} << bit);
    int count = 0;
    for (int c = threadIdx.x; c < total; c += kTopkThreads) count += candidates[c] >= trial;
    if (block_count(count, reduce_buffer, parity) >= k) answer = trial;
  }
  for (int c = threadIdx.x; c < padded; c += kTopkThreads) sorted[c] = 0x7fffffff;
  __syncthreads();
  for (int c = threadIdx.x; c < total; c += kTopkThreads) {
    if (candidates[c] >= answer) {
      sorted[atomicAdd(&sorted_count, 1)] = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(candidates[c]));
    }
  }
  __syncthreads();
  // Bitonic sort of `padded` indices, ascending.
  for (int size = 2; size <= padded; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int p = threadIdx.x; p < padded / 2; p += kTopkThreads) {
        const int low = 2 * p - (p & (stride - 1));
        const int high = low + stride;
        const bool ascending = (low & size) == 0;
        const int32_t x = sorted[low], y = sorted[high];
        if ((x > y) == ascending) {
          sorted[low] = y;
          sorted[high] = x;
        }
      }
      __syncthreads();
    }
  }
  for (int c = threadIdx.x; c < k; c += kTopkThreads) out[c] = sorted[c];
}

constexpr int kTopkShared = kCandidates * 8 + kMaxSorted * 4;

// ---------------------------------------------------------------- split top-k (few rows)
// With a workspace (topk_workspace_bytes), rows of few-row steps are split over many blocks:
// topk_split_kernel: block = (segment of 4096 entries, row). Every block of a row derives the same
// threshold from the same 4096 evenly spaced samples (as topk_select_kernel; none for rows of <=
// 8192 entries) and writes the indices of its entries at or above it, ascending, to its segment's
// slot of the workspace with their count. topk_merge_kernel: one block per row concatenates the
// segments' candidates in segment order (so ascending by index), finds the k-th largest order key
// among them (4 radix passes of 8 bits) and writes every candidate above it and the first
// `remaining` equal to it (ties to the lower index), ascending: the same set and order as
// topk_select_kernel. Fewer than k candidates (an unlucky sample) or more than fit in shared memory
// (heavy ties at the threshold): the exact radix select over the whole row.
constexpr int kSplitThreads = 512;
constexpr int kSplitSegment = 4096;
constexpr int kSplitPerThread = kSplitSegment / kSplitThreads;  // 8 consecutive entries per thread
constexpr int kSplitMaxRows = 32;
constexpr int kSplitMaxSegments = kTopkThreads;  // one segment count per merge thread
constexpr int kMergeCandidates = 8192;

struct SplitWorkspace {
  int32_t* counts;      // [rows][segments]
  int32_t* candidates;  // [rows][segments][kSplitSegment]
};
__host__ __device__ inline SplitWorkspace split_workspace(void* workspace, int64_t rows, int64_t segments) {
  int32_t* base = static_cast<int32_t*>(workspace);
  const int64_t counts = (rows * segments + 3) / 4 * 4;
  return {base, base + counts};
}
inline int64_t split_segments(int64_t score_stride) { return (score_stride + kSplitSegment - 1) / kSplitSegment; }

// Exclusive prefix sum over a block of `warps` warps; *total gets the block total.
__device__ int block_scan(int value, int warps, int* warp_totals, int* total) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  int inclusive = value;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  __syncthreads();
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int w = lane < warps ? warp_totals[lane] : 0;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int other = __shfl_up_sync(0xffffffffu, w, offset);
      if (lane >= offset) w += other;
    }
    warp_totals[lane] = w;
  }
  __syncthreads();
  *total = warp_totals[warps - 1];
  return (warp > 0 ? warp_totals[warp - 1] : 0) + inclusive - value;
}

__global__ void __launch_bounds__(kSplitThreads) topk_split_kernel(const float* scores, int64_t score_stride,
                                                                   const int32_t* row_pos, int64_t row_begin,
                                                                   int ratio, int topk, SplitWorkspace ws,
                                                                   int64_t segments) {
  __shared__ int reduce_buffer[64];
  __shared__ int warp_totals[32];
  const int64_t i = blockIdx.y;
  const int64_t n = (row_pos[row_begin + i] + 1) / ratio;
  const int k = static_cast<int>(min(static_cast<int64_t>(topk), n));
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kSplitSegment;
  if (n <= topk || first >= n) return;
  const float* row = scores + i * score_stride;
  // This thread's entries first + 8 t + j (loads issued before the threshold search).
  const int64_t mine = first + static_cast<int64_t>(threadIdx.x) * kSplitPerThread;
  float values[kSplitPerThread];
  if (mine + kSplitPerThread <= n && (reinterpret_cast<uintptr_t>(row + mine) & 15u) == 0) {
    const float4 lo = reinterpret_cast<const float4*>(row + mine)[0];
    const float4 hi = reinterpret_cast<const float4*>(row + mine)[1];
    values[0] = lo.x, values[1] = lo.y, values[2] = lo.z, values[3] = lo.w;
    values[4] = hi.x, values[5] = hi.y, values[6] = hi.z, values[7] = hi.w;
  } else {
#pragma unroll
    for (int j = 0; j < kSplitPerThread; ++j) values[j] = mine + j < n ? row[mine + j] : 0.0f;
  }
  uint32_t threshold = 0;
  if (n > kCandidates) {
    constexpr int kPer = kSamples / kSplitThreads;
    uint32_t sample[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t e = (static_cast<int64_t>(j * kSplitThreads + threadIdx.x) * n) / kSamples;
      sample[j] = order_key(row[e]);
    }
    const int64_t rank = min(static_cast<int64_t>(kSamples), 2 * static_cast<int64_t>(k) * kSamples / n + 16);
    int parity = 0;
    uint32_t answer = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t trial = answer | (1u << bit);
      int count = 0;
#pragma unroll
      for (int j = 0; j < kPer; ++j) count += sample[j] >= trial;
      // Block sum over kSplitThreads / 32 warps (buffer halves alternate between rounds).
      count = __reduce_add_sync(0xffffffffu, count);
      int* totals = reduce_buffer + 32 * parity;
      parity ^= 1;
      if ((threadIdx.x & 31) == 0) totals[threadIdx.x >> 5] = count;
      __syncthreads();
      const int lane = threadIdx.x & 31;
      const int sum = __reduce_add_sync(0xffffffffu, lane < kSplitThreads / 32 ? totals[lane] : 0);
      if (sum >= rank) answer = trial;
    }
    threshold = answer;
  }
  int keep = 0;
#pragma unroll
  for (int j = 0; j < kSplitPerThread; ++j) keep += (mine + j < n && order_key(values[j]) >= threshold) ? 1 : 0;
  int total = 0;
  int slot = block_scan(keep, kSplitThreads / 32, warp_totals, &total);
  int32_t* out = ws.candidates + (i * segments + blockIdx.x) * kSplitSegment;
#pragma unroll
  for (int j = 0; j < kSplitPerThread; ++j) {
    if (mine + j < n && order_key(values[j]) >= threshold) out[slot++] = static_cast<int32_t>(mine + j);
  }
  if (threadIdx.x == 0) ws.counts[i * segments + blockIdx.x] = total;
}

__global__ void __launch_bounds__(kTopkThreads) topk_merge_kernel(const float* scores, int64_t score_stride,
                                                                  const int32_t* row_pos, int64_t row_begin,
                                                                  int ratio, int topk, SplitWorkspace ws,
                                                                  int64_t segments, int32_t* selected,
                                                                  int32_t* counts) {
  extern __shared__ __align__(16) uint8_t shared_bytes[];
  uint32_t* keys = reinterpret_cast<uint32_t*>(shared_bytes);            // [kMergeCandidates]
  int32_t* indices = reinterpret_cast<int32_t*>(keys + kMergeCandidates);  // [kMergeCandidates]
  __shared__ int offsets[kSplitMaxSegments];
  __shared__ int segment_counts[kSplitMaxSegments];
  __shared__ int warp_totals[32];
  __shared__ int histogram[256];
  __shared__ uint32_t chosen_prefix;
  __shared__ int chosen_remaining;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t i = blockIdx.x;
  const int64_t n = (row_pos[row_begin + i] + 1) / ratio;
  const int k = static_cast<int>(min(static_cast<int64_t>(topk), n));
  int32_t* out = selected + i * topk;
  if (threadIdx.x == 0) counts[i] = k;
  if (n <= topk) {
    for (int64_t e = threadIdx.x; e < n; e += blockDim.x) out[e] = static_cast<int32_t>(e);
    return;
  }
  const float* row = scores + i * score_stride;
  const int used = static_cast<int>((n + kSplitSegment - 1) / kSplitSegment);
  const int mine = threadIdx.x < used ? ws.counts[i * segments + threadIdx.x] : 0;
  int total = 0;
  const int offset = block_scan(mine, kTopkThreads / 32, warp_totals, &total);
  if (total < k || total > kMergeCandidates) {
    radix_topk_row(row, n, k, out);
    return;
  }
  if (threadIdx.x < used) {
    offsets[threadIdx.x] = offset;
    segment_counts[threadIdx.x] = mine;
  }
  __syncthreads();
  // Gather: warp w copies segments w, w + 32, ... (lanes over the segment's candidates).
  for (int b = warp; b < used; b += kTopkThreads / 32) {
    const int32_t* source = ws.candidates + (i * segments + b) * kSplitSegment;
    const int base = offsets[b];
    for (int j = lane; j < segment_counts[b]; j += 32) {
      const int32_t e = source[j];
      indices[base + j] = e;
      keys[base + j] = order_key(row[e]);
    }
  }
  // The k-th largest key: 4 radix passes of 8 bits over the candidates.
  uint32_t prefix = 0, mask = 0;
  int remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kTopkThreads) histogram[b] = 0;
    __syncthreads();
    for (int c = threadIdx.x; c < total; c += kTopkThreads) {
      const uint32_t key = keys[c];
      if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & 0xffu], 1);
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l owns bins 8 l .. 8 l + 7; `above` = the count in the bins of higher lanes.
      int bins[8];
      int sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        bins[j] = histogram[8 * lane + j];
        sum += bins[j];
      }
      int suffix = sum;  // inclusive sum over lanes >= l
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int other = __shfl_down_sync(0xffffffffu, suffix, o);
        if (lane + o < 32) suffix += other;
      }
      int above = suffix - sum;
      if (above < remaining && remaining <= suffix) {
        int bin = 7;
        for (; bin > 0; --bin) {
          if (above + bins[bin] >= remaining) break;
          above += bins[bin];
        }
        chosen_prefix = prefix | (static_cast<uint32_t>(8 * lane + bin) << shift);
        chosen_remaining = remaining - above;
      }
    }
    __syncthreads();
    prefix = chosen_prefix;
    remaining = chosen_remaining;
    mask |= 0xffu << shift;
  }
  // Thread t takes candidates [t per, (t + 1) per): everything above the k-th key, and the
  // first `remaining` equal to it in index order.
  const int per = (total + kTopkThreads - 1) / kTopkThreads;
  const int begin = min(total, static_cast<int>(threadIdx.x) * per), end = min(total, begin + per);
  int equal = 0;
  for (int c = begin; c < end; ++c) equal += keys[c] == prefix;
  int equal_total = 0;
  int equal_rank = block_scan(equal, kTopkThreads / 32, warp_totals, &equal_total);
  int takes = 0;
  {
    int rank = equal_rank;
    for (int c = begin; c < end; ++c) {
      const uint32_t key = keys[c];
      if (key > prefix) {
        ++takes;
      } else if (key == prefix) {
        if (rank < remaining) ++takes;
        ++rank;
      }
    }
  }
  int take_total = 0;
  int slot = block_scan(takes, kTopkThreads / 32, warp_totals, &take_total);
  {
    int rank = equal_rank;
    for (int c = begin; c < end; ++c) {
      const uint32_t key = keys[c];
      bool taken = key > prefix;
      if (key == prefix) {
        taken = rank < remaining;
        ++rank;
      }
      if (taken) out[slot++] = indices[c];
    }
  }
}

constexpr int kMergeShared = kMergeCandidates * 8;


}  // namespace

size_t indexer_workspace_bytes(int64_t rows) { return static_cast<size_t>(rows * kPackBytesPerRow + 64); }

void indexer_scores(const KvLayerView& kv, const BatchView& batch, int64_t row_begin,
                    int64_t row_count, const float* q, const float* weights, int heads, int dim,
                    float* scores, int64_t score_stride, int64_t max_visible, cudaStream_t stream,
                    void* workspace) {
  if (row_count <= 0 || max_visible <= 0) return;
  if (workspace != nullptr && tc_shape(kv, heads, dim) && !use_old_kernels()) {
    const PackedRows packed = packed_rows(workspace, row_count);
    indexer_pack_q_kernel<<<static_cast<unsigned>(row_count), 256, 0, stream>>>(q, weights, row_begin, packed);
    LONGCTX_CUDA_CHECK_LAUNCH();
    const int shared = static_cast<int>(sizeof(TcShared));
    static bool raised = false;  // once (never while a graph is being captured: the first step runs eagerly)
    if (!raised) {
      LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(indexer_tc_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, shared));
      LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(indexer_tc_kernel<8>, cudaFuncAttributeMaxDynamicSharedMemorySize, shared));
      raised = true;
    }
    if (row_count >= 32) {
      const int chunk_tiles = 8;
      const dim3 grid(ceil_div_u(max_visible, int64_t{chunk_tiles} * kTcTile), ceil_div_u(row_count, 8));
      indexer_tc_kernel<8><<<grid, kScoreThreads, shared, stream>>>(kv, batch, row_begin, row_count, q, weights,
                                                                    packed, scores, score_stride, chunk_tiles);
    } else if (use_few_row_kernels()) {
      // Persistent over each row's tiles: about one block per SM in all.
      static bool raised_decode = false;
      if (!raised_decode) {
        LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(indexer_tc_decode_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(sizeof(TcDecodeShared))));
        raised_decode = true;
      }
      const int64_t tiles = (max_visible + kTcTile - 1) / kTcTile;
      const int64_t per_row = std::max<int64_t>(1, std::min<int64_t>(tiles, sm_count() / row_count));
      const bool vector = kv.entries_per_page % 4 == 0 && kv.compressed_page_bytes % 16 == 0 &&
                          (reinterpret_cast<uintptr_t>(kv.compressed_pages) + static_cast<uintptr_t>(kv.indexer_offset)) % 16 == 0;
      const dim3 grid(static_cast<unsigned>(per_row), static_cast<unsigned>(row_count));
      indexer_tc_decode_kernel<<<grid, kScoreThreads, sizeof(TcDecodeShared), stream>>>(
          kv, batch, row_begin, q, weights, packed, scores, score_stride, vector);
    } else {
      const int chunk_tiles = 1;
      const dim3 grid(ceil_div_u(max_visible, int64_t{chunk_tiles} * kTcTile), static_cast<unsigned>(row_count));
      indexer_tc_kernel<1><<<grid, kScoreThreads, shared, stream>>>(kv, batch, row_begin, row_count, q, weights,
                                                                    packed, scores, score_stride, chunk_tiles);
    }
    LONGCTX_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t shared = (static_cast<int64_t>(heads) * (dim + 1) + heads + (kScoreThreads / 32) * dim) *
                         static_cast<int64_t>(sizeof(float));
  if (shared > 200 * 1024) fail("CUDA indexer: ", heads, " heads of ", dim, " dims do not fit in shared memory");
  // Raised once per size (never while a graph is being captured: the first step runs eagerly).
  static int64_t allowed_shared = 48 * 1024;
  if (shared > allowed_shared) {
    LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(indexer_scores_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(shared)));
    allowed_shared = shared;
  }
  const dim3 grid(static_cast<unsigned>(row_count), ceil_div_u(max_visible, kEntriesPerBlock));
  indexer_scores_kernel<<<grid, kScoreThreads, shared, stream>>>(kv, batch, row_begin, q, weights, heads, dim,
                                                                 scores, score_stride);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

size_t topk_workspace_bytes(int64_t rows, int64_t score_stride) {
  const int64_t split_rows = std::min<int64_t>(rows, kSplitMaxRows);
  const int64_t segments = split_segments(score_stride);
  return static_cast<size_t>(((split_rows * segments + 3) / 4 * 4 + split_rows * segments * kSplitSegment) * 4);
}

void topk_rows(const float* scores, int64_t score_stride, const int32_t* row_pos,
               int64_t row_begin, int64_t row_count, int ratio, int topk, int32_t* selected,
               int32_t* counts, cudaStream_t stream, void* workspace) {
  if (row_count <= 0) return;
  const int64_t segments = split_segments(score_stride);
  if (workspace != nullptr && row_count <= kSplitMaxRows && segments <= kSplitMaxSegments && !use_old_kernels() &&
      use_few_row_kernels()) {
    static bool raised_merge = false;
    if (!raised_merge) {
      LONGCTX_CUDA_CHECK(
          cudaFuncSetAttribute(topk_merge_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMergeShared));
      raised_merge = true;
    }
    const SplitWorkspace ws = split_workspace(workspace, row_count, segments);
    const dim3 grid(static_cast<unsigned>(segments), static_cast<unsigned>(row_count));
    topk_split_kernel<<<grid, kSplitThreads, 0, stream>>>(scores, score_stride, row_pos, row_begin, ratio, topk, ws,
                                                          segments);
    LONGCTX_CUDA_CHECK_LAUNCH();
    topk_merge_kernel<<<static_cast<unsigned>(row_count), kTopkThreads, kMergeShared, stream>>>(
        scores, score_stride, row_pos, row_begin, ratio, topk, ws, segments, selected, counts);
    LONGCTX_CUDA_CHECK_LAUNCH();
    return;
  }
  if (use_old_kernels()) {
    topk_kernel<<<static_cast<unsigned>(row_count), kTopkThreads, 0, stream>>>(
        scores, score_stride, row_pos, row_begin, ratio, topk, selected, counts);
    LONGCTX_CUDA_CHECK_LAUNCH();
    return;
  }
  static bool raised = false;
  if (!raised) {
    LONGCTX_CUDA_CHECK(
        cudaFuncSetAttribute(topk_select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kTopkShared));
    raised = true;
  }
  topk_select_kernel<<<static_cast<unsigned>(row_count), kTopkThreads, kTopkShared, stream>>>(
      scores, score_stride, row_pos, row_begin, ratio, topk, selected, counts);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

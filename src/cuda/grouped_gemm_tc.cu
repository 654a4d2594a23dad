// Tensor-core grouped GEMM of the routed experts (fast mode): y[s, :] = x[x_rows[s], :] W_g^T for
// the slots s of each expert group g (device offsets/counts, optional busy list).
//
// Layout (scratch: LinearWorkspace::tc_scratch, carved by the host):
//  - activations: fp32 rows [*, in] (row stride x_stride) gathered by x_rows, which the caller
//    has already fp8-simulated (blocks of 128, power-of-two scale). quantize_slots_kernel stores
//    them in slot order as e4m3 bytes xq [slots, in] and one scale per (slot, 128 inputs),
//    transposed: xs [in / 128, slots] floats. Exact for simulated inputs: value = e4m3 x scale.
//  - fp4 weights (packed e2m1 [out, in / 2], low nibble first, e8m0 scales [out, in / 32]) are
//    read as stored: per 128-deep K step the kernel stages 64 bytes per output row and its four
//    scale bytes through the cp.async pipeline and rewrites them in shared memory as e4m3 codes
//    (the B tile, 128-byte swizzled as below) and one float scale per (output, 128 inputs),
//    2^(top - 127 - 6) with top the largest of the four exponents. Each 32-block's codes are
//    shifted up by 6 - d binades, d = top - (its own exponent): every e2m1 value x 2^(6 - d) is
//    an e4m3 value while d <= 14 (the largest becomes at most 6 x 64 = 384 <= 448), so the
//    product is exact; beyond 14 binades (never seen in trained weights) the small block rounds
//    to nearest e4m3. The codes come from a table per shift (8 magnitudes, the float
//    conversion below, sign bit ORed: the conversion is sign-symmetric, -0 included).
//    The conversion pass (Fp4Conversion::kPass; kAuto with many rows per group, where it is
//    faster: see grouped_linear_tc; always with the mma.sync variant) runs convert_fp4_kernel
//    first: batches of 8 groups rewritten as e4m3 wq [batch, out, in] + float scales
//    ws [batch, in / 128, out] in scratch, the same codes and scales, read by the GEMM below
//    like fp8 weights; bitwise the same results.
//  - fp8 weights (e4m3 [out, in], e8m0 scales [ceil(out / 128), in / 128]) are read as stored.
//  - y fp32 [slots, out] (row stride y_stride).
//
// GEMM: a CTA computes 128 slots x 128 outputs; K advances 128 (one scale block) per step
// through a 4-stage cp.async pipeline. Shared tiles have rows of 128 bytes whose 16-byte chunks
// are XOR-swizzled by row (chunk ^ row % 8): the wgmma 128-byte swizzle (stages 1024-byte
// aligned), and conflict-free ldmatrix. Two warpgroups each run wgmma m64n128k32 e4m3 x e4m3
// (QGMMA) with f32 accumulators; each 128-block's products are summed on the tensor core from
// zero (4 chained k32 steps) and promoted in fp32: acc += block * (scale_x * scale_w), as the
// reference's fp8 GEMM does (promotion per 128; the unit's accumulation keeps fewer bits than
// fp32, about 3e-4 of the output's magnitude here). LONGCTX_CUDA_TC_MMA_SYNC=1 selects 8 warps
// of 64 x 32 running mma.sync m16n8k32 e4m3 instead: on sm_90 ptxas lowers it to fp16 HMMA
// (exact products, fp32-like sums, ~1e-7) at about 60% of the wgmma kernel's speed.
// fp4 weights: the converted B tile is double-buffered outside the stages, and the next K
// step's tile is converted while the tensor cores run this one (wgmma is asynchronous): each
// thread converts the bytes its own cp.async brought (its row's scale word copied per thread),
// so the conversion needs no barrier of its own, only the one that starts each K step.
// Persistent CTAs walk the tiles of a batch of groups in (group, row tile, output tile) order,
// the output tile fastest, so concurrent CTAs share A rows and one group's weights stay in L2.
// The group table is read on the device: the host never learns the rows per expert.
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

constexpr int kBM = 128;
constexpr int kBN = 128;
constexpr int kBK = 128;
constexpr int kStages = 4;
constexpr int kThreads = 256;
constexpr int kTileBytes = kBM * kBK;
constexpr int kStageBytes = 2 * kTileBytes + 2 * 128 * static_cast<int>(sizeof(float));
constexpr int kSharedBytes = kStages * kStageBytes + 1024;  // + alignment of the stages to 1024
constexpr int kMaxBatch = 256;     // groups per GEMM launch (the shared group table)
constexpr int kConvertBatch = 8;   // fp4 groups converted per launch (scratch)
constexpr int kMinRowsPerGroup = 16;
// Fp4Conversion::kAuto: the conversion pass from this many slots per group on (H100, bench
// kernels --only moe: in-GEMM conversion re-converts a weight tile for every 128-row tile).
constexpr int64_t kFp4PassMinRowsPerGroup = 768;
// The fused fp4 kernel: a stage holds the A tile, the packed fp4 of the B tile, one copy of its
// row's scale word per thread and the A scales; the converted B tiles and their scales live
// outside the stages, double-buffered.
constexpr int kFp4RawBytes = kBN * kBK / 2;
constexpr int kFp4StageBytes = kTileBytes + kFp4RawBytes + kThreads * 4 + kBM * static_cast<int>(sizeof(float));
constexpr int kFp4StageStride = (kFp4StageBytes + 1023) / 1024 * 1024;  // A tiles 1024-byte aligned
constexpr int kFp4SharedBytes =
    2 * kTileBytes + kStages * kFp4StageStride + 2 * kBN * static_cast<int>(sizeof(float)) + 1024;
constexpr int kFp4Shifts = 27;  // shifts 6 - d, d = 0..26 (from d = 14 on, everything rounds to 0)

struct TcArgs {
  const uint8_t* xq;
  const float* xs;
  int64_t slots;
  const uint8_t* weight;  // stored weights; with the fp4 conversion pass: the converted batch
  const float* ws;        // the conversion pass's scales
  const uint8_t* scale;   // stored e8m0 scales
  int64_t group_weight_bytes, group_scale_bytes;  // stored strides
  int64_t out, in;
  const int32_t* offsets;
  const int32_t* counts;
  const int32_t* group_list;
  int batch_begin, batch_size;
  float* y;
  int64_t y_stride;
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes (bytes == 0: zeros) from global into shared memory.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// d += a b (16 x 32 e4m3 row-major times 32 x 8 e4m3 column-major, f32 accumulators).
__device__ __forceinline__ void mma_e4m3(float* d, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Warpgroup MMA (sm_90a): d = (accumulate ? d : 0) + A B for a 64 x 32 e4m3 A and a 128 x 32
// e4m3 B, both K-major in shared memory with the 128-byte swizzle (descriptors below).
__device__ __forceinline__ void wgmma_e4m3_128(float* d, uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Keeps the compiler from moving accesses of wgmma accumulators across the wait.
__device__ __forceinline__ void wgmma_fence_operands(float* d) {
#pragma unroll
  for (int e = 0; e < 64; ++e) asm volatile("" : "+f"(d[e])::"memory");
}
// Shared-memory matrix descriptor of a K-major tile with rows of 128 bytes, 128-byte swizzle
// (16-byte chunk c of row r stored at chunk c ^ (r % 8); the tile 1024-byte aligned): start
// address, leading offset unused (1), 1024 bytes between 8-row groups, swizzle mode 1.
__device__ __forceinline__ uint64_t smem_desc(const void* p) {
  const uint64_t address = smem_addr(p);
  return ((address & 0x3ffffu) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// The first 1024-byte aligned byte of dynamic shared memory (the 128-byte swizzle pattern
// follows address bits 7-9).
__device__ __forceinline__ uint8_t* align1024(uint8_t* p) { return p + ((1024 - (smem_addr(p) & 1023u)) & 1023u); }

// The batch's groups and where each one's tiles start (shared memory).
struct GroupTable {
  int tile_start[kMaxBatch + 1];
  int group_of[kMaxBatch];
  int base_of[kMaxBatch];
  int count_of[kMaxBatch];
};
// Fills `t` for a's batch (all threads; ends with a barrier); returns the tile count.
__device__ int load_group_table(const TcArgs& a, int n_tiles, GroupTable& t) {
  for (int j = threadIdx.x; j < a.batch_size; j += blockDim.x) {
    const int e = a.batch_begin + j;
    const int g = a.group_list != nullptr ? a.group_list[e] : e;
    t.group_of[j] = g;
    t.count_of[j] = g >= 0 ? a.counts[g] : 0;
    t.base_of[j] = g >= 0 ? a.offsets[g] : 0;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int tiles = 0;
    for (int j = 0; j < a.batch_size; ++j) {
      t.tile_start[j] = tiles;
      tiles += (t.count_of[j] + kBM - 1) / kBM * n_tiles;
    }
    t.tile_start[a.batch_size] = tiles;
  }
  __syncthreads();
  return t.tile_start[a.batch_size];
}
// The batch entry owning `tile`: the last j with tile_start[j] <= tile.
__device__ int tile_entry(const GroupTable& t, int batch_size, int tile) {
  int lo = 0, hi = batch_size - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (t.tile_start[mid] <= tile) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// ---- fp4 -> e4m3 folding (see the header), shared by convert_fp4_kernel and the fused kernel:
// the same codes and scales by construction.
// A 128-block's largest exponent and float scale 2^(top - 127 - 6) (NaN if any byte is NaN),
// from its four e8m0 bytes.
struct Fp4Block {
  uint32_t top;
  float scale;
};
__device__ __forceinline__ Fp4Block fp4_block(uint32_t bytes) {
  uint32_t top = 0;
  bool nan = false;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t b = (bytes >> (8 * i)) & 0xffu;
    top = max(top, b);
    nan = nan || b == 0xffu;
  }
  return {top, nan ? __int_as_float(0x7fc00000) : ldexpf(1.0f, static_cast<int>(top) - 133)};
}
// Shift index of a 32-block with exponent `own`: d = top - own, the shift 6 - d, kept >= -20.
__device__ __forceinline__ int fp4_shift_index(uint32_t top, uint32_t own) {
  return min(static_cast<int>(top - own), kFp4Shifts - 1);
}
// e4m3 code of e2m1 `code` x 2^(6 - index).
__device__ __forceinline__ uint32_t fp4_to_e4m3(uint32_t code, int index) {
  const float multiplier = __uint_as_float(static_cast<uint32_t>(127 + 6 - index) << 23);
  return float_to_fp8(fp4_to_float(code) * multiplier);
}
// Four e2m1 codes (the low 16 bits, first code lowest) to four e4m3 bytes, from the shift's
// magnitude table (bytes of codes 0..3 in .x, 4..7 in .y): byte_perm looks the magnitudes up,
// a second one puts 0x80 where bit 3 (the sign) is set. Selector nibbles keep bit 3 clear.
__device__ __forceinline__ uint32_t fp4x4_to_e4m3(uint32_t codes, uint2 magnitudes) {
  const uint32_t magnitude = __byte_perm(magnitudes.x, magnitudes.y, codes & 0x7777u);
  const uint32_t sign = __byte_perm(0u, 0x80808080u, (codes >> 1) & 0x4444u);
  return magnitude | sign;
}

// One warp per (slot, 128-block): e4m3 codes of x / scale and the block's scale.
__global__ void quantize_slots_kernel(const float* x, int64_t x_stride, const int32_t* x_rows, int64_t slots,
                                      int64_t in, uint8_t* xq, float* xs) {
  const int64_t blocks = in / 128;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (index >= slots * blocks) return;
  const int lane = threadIdx.x & 31;
  const int64_t s = index / blocks;
  const int64_t kb = index % blocks;
  const int64_t row = x_rows != nullptr ? x_rows[s] : s;
  const float4 v = *reinterpret_cast<const float4*>(x + row * x_stride + kb * 128 + lane * 4);
  const float amax = warp_max(fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
  const float scale = fp8_scale_from_amax(amax);
  const auto code = [scale](float value) {
    return static_cast<uint32_t>(float_to_fp8(fminf(fmaxf(value / scale, -448.0f), 448.0f)));
  };
  const uint32_t packed = code(v.x) | (code(v.y) << 8) | (code(v.z) << 16) | (code(v.w) << 24);
  *reinterpret_cast<uint32_t*>(xq + s * in + kb * 128 + lane * 4) = packed;
  if (lane == 0) xs[kb * slots + s] = scale;
}

// One thread per (batch entry, output, 16 weights): the e4m3 codes of the folded 128-block
// (see the header), and the block's float scale 2^(E - 127 - 6) from its first piece.
__global__ void convert_fp4_kernel(const uint8_t* weight, const uint8_t* scale, int64_t group_weight_bytes,
                                   int64_t group_scale_bytes, int64_t out, int64_t in, const int32_t* group_list,
                                   int batch_begin, int batch_size, uint8_t* wq, float* ws) {
  const int64_t pieces = in / 16;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= static_cast<int64_t>(batch_size) * out * pieces) return;
  const int64_t j = index / (out * pieces);
  const int64_t n = (index / pieces) % out;
  const int64_t p = index % pieces;
  const int64_t e = batch_begin + j;
  const int g = group_list != nullptr ? group_list[e] : static_cast<int>(e);
  if (g < 0) return;
  const int64_t kb = p / 8;
  const uint32_t bytes = __ldg(reinterpret_cast<const uint32_t*>(scale + g * group_scale_bytes + n * (in / 32) + kb * 4));
  const Fp4Block block = fp4_block(bytes);
  const int shift_index = fp4_shift_index(block.top, (bytes >> (8 * ((p % 8) / 2))) & 0xffu);
  const uint2 codes = __ldg(reinterpret_cast<const uint2*>(weight + g * group_weight_bytes + n * (in / 2) + p * 8));
  const uint32_t words[2] = {codes.x, codes.y};
  uint32_t packed[4];
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    uint32_t value = 0;
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      const int i = 4 * w + b;  // weight i of the piece: nibble i % 8 of word i / 8
      const uint32_t code = (words[i / 8] >> (4 * (i % 8))) & 0xfu;
      value |= fp4_to_e4m3(code, shift_index) << (8 * b);
    }
    packed[w] = value;
  }
  *reinterpret_cast<uint4*>(wq + (j * out + n) * in + p * 16) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
  if (p % 8 == 0) ws[(j * (in / 128) + kb) * out + n] = block.scale;
}

template <bool kFp8Weights, bool kWgmma>
__global__ void __launch_bounds__(kThreads, 1) grouped_tc_kernel(TcArgs a) {
  extern __shared__ __align__(128) uint8_t shared_raw[];
  uint8_t* shared = align1024(shared_raw);
  __shared__ GroupTable table;
  const int tid = threadIdx.x;
  const int n_tiles = static_cast<int>((a.out + kBN - 1) / kBN);
  const int total = load_group_table(a, n_tiles, table);
  const int k_blocks = static_cast<int>(a.in / kBK);
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int gq = lane >> 2;  // fragment row group
  const int tq = lane & 3;   // thread in group
  // Accumulator e of this thread (64 of them; the C/D fragment layout of m16n8 tiles) sits at
  // tile row row_base + row_part(e), output col_base + col_part(e).
  // mma.sync: warps 2 (rows) x 4 (outputs) of 64 x 32, e = (mi * 4 + ni) * 4 + h.
  // wgmma: warpgroup wg owns rows 64 wg.., its warp w4 rows 16 w4.., e = i * 4 + h for n8 tile i.
  const int row_base = kWgmma ? (warp >> 2) * 64 + (warp & 3) * 16 + gq : (warp & 1) * 64 + gq;
  const int col_base = kWgmma ? 2 * tq : (warp >> 1) * 32 + 2 * tq;
  const auto row_part = [](int e) { return kWgmma ? 8 * ((e & 3) >> 1) : (e / 16) * 16 + 8 * ((e & 3) >> 1); };
  const auto col_part = [](int e) { return kWgmma ? (e / 4) * 8 + (e & 1) : ((e / 4) % 4) * 8 + (e & 1); };
  for (int tile = blockIdx.x; tile < total; tile += gridDim.x) {
    const int j = tile_entry(table, a.batch_size, tile);
    const int local = tile - table.tile_start[j];
    const int m0 = local / n_tiles * kBM;
    const int64_t n0 = static_cast<int64_t>(local % n_tiles) * kBN;
    const int count = table.count_of[j];
    const int64_t base = table.base_of[j];
    const int g = table.group_of[j];
    const uint8_t* w_base = kFp8Weights ? a.weight + g * a.group_weight_bytes : a.weight + j * a.out * a.in;
    const float* ws_base = kFp8Weights ? nullptr : a.ws + static_cast<int64_t>(j) * k_blocks * a.out;
    const uint8_t* scale_row = kFp8Weights ? a.scale + g * a.group_scale_bytes + (n0 / 128) * k_blocks : nullptr;

    const auto load_stage = [&](int kb) {
      uint8_t* stage = shared + (kb % kStages) * kStageBytes;
      uint8_t* sa = stage;
      uint8_t* sb = stage + kTileBytes;
      float* ssa = reinterpret_cast<float*>(stage + 2 * kTileBytes);
      float* ssb = ssa + 128;
#pragma unroll
      for (int i = 0; i < kTileBytes / 16 / kThreads; ++i) {
        const int idx = tid + i * kThreads;
        const int r = idx >> 3;
        const int c = idx & 7;
        const int swz = (c ^ (r & 7)) << 4;
        const bool row_ok = m0 + r < count;
        const uint8_t* src_a = row_ok ? a.xq + (base + m0 + r) * a.in + kb * kBK + c * 16 : a.xq;
        cp_async16(sa + r * kBK + swz, src_a, row_ok ? 16 : 0);
        const bool out_ok = n0 + r < a.out;
        const uint8_t* src_b = out_ok ? w_base + (n0 + r) * a.in + kb * kBK + c * 16 : w_base;
        cp_async16(sb + r * kBK + swz, src_b, out_ok ? 16 : 0);
      }
      if (tid < 128) {
        const bool row_ok = m0 + tid < count;
        const float* src = row_ok ? a.xs + static_cast<int64_t>(kb) * a.slots + base + m0 + tid : a.xs;
        cp_async4(ssa + tid, src, row_ok ? 4 : 0);
      } else if (!kFp8Weights) {
        const int c = tid - 128;
        const bool out_ok = n0 + c < a.out;
        const float* src = out_ok ? ws_base + static_cast<int64_t>(kb) * a.out + n0 + c : ws_base;
        cp_async4(ssb + c, src, out_ok ? 4 : 0);
      }
    };

    float acc[64];
#pragma unroll
    for (int e = 0; e < 64; ++e) acc[e] = 0.0f;
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < k_blocks) load_stage(s);
      cp_async_commit();
    }
    for (int kb = 0; kb < k_blocks; ++kb) {
      cp_async_wait<kStages - 2>();
      // cp.async wrote through the generic proxy; the wgmma reads through the async proxy.
      if constexpr (kWgmma) asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();  // stage kb landed for all; stage kb - 1 is no longer read
      if (kb + kStages - 1 < k_blocks) load_stage(kb + kStages - 1);
      cp_async_commit();
      const uint8_t* stage = shared + (kb % kStages) * kStageBytes;
      const uint8_t* sa = stage;
      const uint8_t* sb = stage + kTileBytes;
      const float* ssa = reinterpret_cast<const float*>(stage + 2 * kTileBytes);
      const float* ssb = ssa + 128;
      float part[64];
      if constexpr (kWgmma) {
        // The block's 4 k32 steps chained on the tensor core, the first from zero.
        const uint64_t da = smem_desc(sa + (warp >> 2) * 64 * kBK);
        const uint64_t db = smem_desc(sb);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < kBK / 32; ++ks) wgmma_e4m3_128(part, da + 2 * ks, db + 2 * ks, ks);  // +32 bytes
        wgmma_commit();
        wgmma_wait_all();
      } else {
#pragma unroll
        for (int e = 0; e < 64; ++e) part[e] = 0.0f;
        const int wm = warp & 1;
        const int wn = warp >> 1;
#pragma unroll
        for (int ks = 0; ks < kBK / 32; ++ks) {
          uint32_t af[4][4];
          uint32_t bf[4][2];
#pragma unroll
          for (int mi = 0; mi < 4; ++mi) {
            const int r = wm * 64 + mi * 16 + (lane & 15);
            const int c = ks * 2 + (lane >> 4);
            ldmatrix_x4(af[mi], sa + r * kBK + ((c ^ (r & 7)) << 4));
          }
#pragma unroll
          for (int np = 0; np < 2; ++np) {
            const int r = wn * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
            const int c = ks * 2 + ((lane >> 3) & 1);
            uint32_t q[4];
            ldmatrix_x4(q, sb + r * kBK + ((c ^ (r & 7)) << 4));
            bf[2 * np][0] = q[0];
            bf[2 * np][1] = q[1];
            bf[2 * np + 1][0] = q[2];
            bf[2 * np + 1][1] = q[3];
          }
#pragma unroll
          for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) mma_e4m3(part + (mi * 4 + ni) * 4, af[mi], bf[ni]);
          }
        }
      }
      // Promotion of the 128-block in fp32: acc += part * (scale_x[row] * scale_w[col]).
      const float fp8_scale = kFp8Weights ? e8m0_to_float(__ldg(scale_row + kb)) : 0.0f;
#pragma unroll
      for (int e = 0; e < 64; e += 2) {
        const float sx = ssa[row_base + row_part(e)];
        const float sw0 = kFp8Weights ? fp8_scale : ssb[col_base + col_part(e)];
        const float sw1 = kFp8Weights ? fp8_scale : ssb[col_base + col_part(e) + 1];
        acc[e] = fmaf(part[e], sx * sw0, acc[e]);
        acc[e + 1] = fmaf(part[e + 1], sx * sw1, acc[e + 1]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the next tile's prologue overwrites the stages
#pragma unroll
    for (int e = 0; e < 64; e += 2) {
      const int r = m0 + row_base + row_part(e);
      const int64_t col = n0 + col_base + col_part(e);
      if (r < count && col < a.out) {
        *reinterpret_cast<float2*>(a.y + (base + r) * a.y_stride + col) = make_float2(acc[e], acc[e + 1]);
      }
    }
  }
}

// fp4 weights read as stored and converted in shared memory (see the header); wgmma only.
__global__ void __launch_bounds__(kThreads, 1) grouped_tc_fp4_kernel(TcArgs a) {
  extern __shared__ __align__(128) uint8_t shared_raw[];
  uint8_t* shared = align1024(shared_raw);
  uint8_t* b_tiles = shared;  // [2][kTileBytes], converted e4m3, swizzled
  uint8_t* stages = shared + 2 * kTileBytes;
  float* b_scales = reinterpret_cast<float*>(stages + kStages * kFp4StageStride);  // [2][kBN]
  __shared__ GroupTable table;
  __shared__ uint2 magnitudes_of[kFp4Shifts];  // e4m3 bytes of e2m1 codes 0..7 per shift index
  const int tid = threadIdx.x;
  if (tid < kFp4Shifts) {
    uint32_t low = 0, high = 0;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      low |= fp4_to_e4m3(c, tid) << (8 * c);
      high |= fp4_to_e4m3(c + 4, tid) << (8 * c);
    }
    magnitudes_of[tid] = make_uint2(low, high);
  }
  const int n_tiles = static_cast<int>((a.out + kBN - 1) / kBN);
  const int total = load_group_table(a, n_tiles, table);  // its barriers publish the table too
  const int k_blocks = static_cast<int>(a.in / kBK);
  const int warp = tid >> 5;
  const int lane = tid & 31;
  // Accumulators as in grouped_tc_kernel's wgmma variant.
  const int row_base = (warp >> 2) * 64 + (warp & 3) * 16 + (lane >> 2);
  const int col_base = 2 * (lane & 3);
  const auto row_part = [](int e) { return 8 * ((e & 3) >> 1); };
  const auto col_part = [](int e) { return (e / 4) * 8 + (e & 1); };
  // This thread's share of the B tile: output row cr, 32-blocks 2 ch and 2 ch + 1 of each K
  // step (consecutive threads on consecutive rows: conflict-free swizzled stores).
  const int cr = tid & (kBN - 1);
  const int ch = tid >> 7;
  for (int tile = blockIdx.x; tile < total; tile += gridDim.x) {
    const int j = tile_entry(table, a.batch_size, tile);
    const int local = tile - table.tile_start[j];
    const int m0 = local / n_tiles * kBM;
    const int64_t n0 = static_cast<int64_t>(local % n_tiles) * kBN;
    const int count = table.count_of[j];
    const int64_t base = table.base_of[j];
    const int64_t g = table.group_of[j];
    const bool row_ok = n0 + cr < a.out;
    const uint8_t* w_row = a.weight + g * a.group_weight_bytes + (n0 + cr) * (a.in / 2);
    const uint8_t* s_row = a.scale + g * a.group_scale_bytes + (n0 + cr) * (a.in / 32);

    const auto load_stage = [&](int kb) {
      uint8_t* stage = stages + (kb % kStages) * kFp4StageStride;
      uint8_t* sa = stage;
      uint8_t* raw = stage + kTileBytes;
      uint32_t* words = reinterpret_cast<uint32_t*>(raw + kFp4RawBytes);
      float* ssa = reinterpret_cast<float*>(words + kThreads);
#pragma unroll
      for (int i = 0; i < kTileBytes / 16 / kThreads; ++i) {
        const int idx = tid + i * kThreads;
        const int r = idx >> 3;
        const int c = idx & 7;
        const bool ok = m0 + r < count;
        const uint8_t* src = ok ? a.xq + (base + m0 + r) * a.in + kb * kBK + c * 16 : a.xq;
        cp_async16(sa + r * kBK + ((c ^ (r & 7)) << 4), src, ok ? 16 : 0);
      }
      // Packed fp4: 16 bytes (one 32-block) per copy, stored in the order this thread reads.
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const uint8_t* src = row_ok ? w_row + kb * (kBK / 2) + (2 * ch + i) * 16 : a.weight;
        cp_async16(raw + i * (kFp4RawBytes / 2) + tid * 16, src, row_ok ? 16 : 0);
      }
      cp_async4(words + tid, row_ok ? s_row + kb * 4 : a.scale, row_ok ? 4 : 0);
      if (tid < kBM) {
        const bool ok = m0 + tid < count;
        const float* src = ok ? a.xs + static_cast<int64_t>(kb) * a.slots + base + m0 + tid : a.xs;
        cp_async4(ssa + tid, src, ok ? 4 : 0);
      }
    };
    // Stage kb's fp4 bytes (this thread's own copies, landed) to e4m3 in B tile kb % 2.
    const auto convert = [&](int kb) {
      const uint8_t* raw = stages + (kb % kStages) * kFp4StageStride + kTileBytes;
      const uint32_t bytes = reinterpret_cast<const uint32_t*>(raw + kFp4RawBytes)[tid];
      const Fp4Block block = fp4_block(bytes);
      if (ch == 0) b_scales[(kb & 1) * kBN + cr] = block.scale;
      uint8_t* sb = b_tiles + (kb & 1) * kTileBytes + cr * kBK;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int q = 2 * ch + i;
        const uint2 m = magnitudes_of[fp4_shift_index(block.top, (bytes >> (8 * q)) & 0xffu)];
        const uint4 v = *reinterpret_cast<const uint4*>(raw + i * (kFp4RawBytes / 2) + tid * 16);
        const uint4 lo = make_uint4(fp4x4_to_e4m3(v.x, m), fp4x4_to_e4m3(v.x >> 16, m), fp4x4_to_e4m3(v.y, m),
                                    fp4x4_to_e4m3(v.y >> 16, m));
        const uint4 hi = make_uint4(fp4x4_to_e4m3(v.z, m), fp4x4_to_e4m3(v.z >> 16, m), fp4x4_to_e4m3(v.w, m),
                                    fp4x4_to_e4m3(v.w >> 16, m));
        *reinterpret_cast<uint4*>(sb + (((2 * q) ^ (cr & 7)) << 4)) = lo;
        *reinterpret_cast<uint4*>(sb + (((2 * q + 1) ^ (cr & 7)) << 4)) = hi;
      }
    };

    float acc[64];
#pragma unroll
    for (int e = 0; e < 64; ++e) acc[e] = 0.0f;
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < k_blocks) load_stage(s);
      cp_async_commit();
    }
    cp_async_wait<kStages - 2>();
    convert(0);
    for (int kb = 0; kb < k_blocks; ++kb) {
      // B tile kb (ordinary stores) and A tile kb (cp.async) are read next through the async proxy.
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();  // both landed for all; step kb - 1's tiles, scales and stage are free
      if (kb + kStages - 1 < k_blocks) load_stage(kb + kStages - 1);
      cp_async_commit();
      const uint8_t* stage = stages + (kb % kStages) * kFp4StageStride;
      const float* ssa = reinterpret_cast<const float*>(stage + kTileBytes + kFp4RawBytes + kThreads * 4);
      const float* ssb = b_scales + (kb & 1) * kBN;
      float part[64];
      const uint64_t da = smem_desc(stage + (warp >> 2) * 64 * kBK);
      const uint64_t db = smem_desc(b_tiles + (kb & 1) * kTileBytes);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kBK / 32; ++ks) wgmma_e4m3_128(part, da + 2 * ks, db + 2 * ks, ks);  // +32 bytes
      wgmma_commit();
      // While the tensor cores run: the next step's B tile into the other buffer.
      if (kb + 1 < k_blocks) {
        cp_async_wait<kStages - 2>();
        convert(kb + 1);
      }
      wgmma_wait_all();
      wgmma_fence_operands(part);
#pragma unroll
      for (int e = 0; e < 64; e += 2) {
        const float sx = ssa[row_base + row_part(e)];
        acc[e] = fmaf(part[e], sx * ssb[col_base + col_part(e)], acc[e]);
        acc[e + 1] = fmaf(part[e + 1], sx * ssb[col_base + col_part(e) + 1], acc[e + 1]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the next tile's prologue overwrites the stages and B tile 0
#pragma unroll
    for (int e = 0; e < 64; e += 2) {
      const int r = m0 + row_base + row_part(e);
      const int64_t col = n0 + col_base + col_part(e);
      if (r < count && col < a.out) {
        *reinterpret_cast<float2*>(a.y + (base + r) * a.y_stride + col) = make_float2(acc[e], acc[e + 1]);
      }
    }
  }
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

size_t activation_bytes(const LinearView& w, int64_t total_slots) {
  const size_t slots = static_cast<size_t>(total_slots);
  const size_t in = static_cast<size_t>(w.in);
  return align256(slots * in) + align256(slots * (in / 128) * sizeof(float));
}
size_t converted_group_bytes(const LinearView& w) {
  const size_t out = static_cast<size_t>(w.out), in = static_cast<size_t>(w.in);
  return align256(out * in) + align256((in / 128) * out * sizeof(float));
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

bool env_flag(const char* name) {
  const char* text = std::getenv(name);
  return text != nullptr && text[0] == '1';
}
// LONGCTX_CUDA_TC_MMA_SYNC=1: the mma.sync kernel instead of wgmma (A/B runs).
bool mma_sync_requested() {
  static const bool requested = env_flag("LONGCTX_CUDA_TC_MMA_SYNC");
  return requested;
}
// Whether fp4 weights go through the conversion pass: asked for, kAuto with at least
// kFp4PassMinRowsPerGroup slots per group (LONGCTX_CUDA_TC_FP4_PASS_ROWS overrides), the
// mma.sync kernel, or weights that do not allow the fused kernel's 16-byte copies.
bool fp4_pass(const LinearView& w, int groups, int64_t total_slots, Fp4Conversion mode) {
  static const int64_t pass_rows = [] {
    const char* text = std::getenv("LONGCTX_CUDA_TC_FP4_PASS_ROWS");
    return text != nullptr && text[0] != '\0' ? std::atoll(text) : kFp4PassMinRowsPerGroup;
  }();
  if (mode == Fp4Conversion::kPass || mma_sync_requested()) return true;
  if (!aligned(w.weight, 16) || w.group_weight_bytes % 16 != 0) return true;
  return mode == Fp4Conversion::kAuto && total_slots >= pass_rows * std::max(groups, 1);
}

}  // namespace

size_t grouped_linear_tc_scratch_bytes(const LinearView& w, int groups, int64_t total_slots, Fp4Conversion fp4) {
  size_t bytes = activation_bytes(w, total_slots);
  if (w.format == kWeightFP4 && fp4_pass(w, groups, total_slots, fp4)) {
    bytes += converted_group_bytes(w) * static_cast<size_t>(std::min(groups, kConvertBatch));
  }
  return bytes;
}

bool grouped_linear_tc(const LinearView& w, int groups, const int32_t* offsets, const int32_t* counts,
                       int64_t total_slots, const float* x, int64_t x_stride, const int32_t* x_rows, float* y,
                       int64_t y_stride, const LinearWorkspace& workspace, cudaStream_t stream,
                       const int32_t* group_list, Fp4Conversion fp4_mode) {
  const bool fp4 = w.format == kWeightFP4;
  if (!fp4 && w.format != kWeightFP8) return false;
  if (w.in % kBK != 0 || w.out % 2 != 0 || y_stride % 2 != 0 || !aligned(y, 8)) return false;
  if (x_stride % 4 != 0 || !aligned(x, 16) || w.scale == nullptr) return false;
  if (fp4 && (!aligned(w.weight, 8) || w.group_weight_bytes % 8 != 0 || !aligned(w.scale, 4) ||
              w.group_scale_bytes % 4 != 0)) {
    return false;
  }
  if (!fp4 && (!aligned(w.weight, 16) || w.group_weight_bytes % 16 != 0)) return false;
  if (total_slots >= (int64_t{1} << 31) || w.out * w.in >= (int64_t{1} << 40)) return false;
  const size_t act = activation_bytes(w, total_slots);
  if (workspace.tc_scratch == nullptr || workspace.tc_scratch_bytes < act) return false;
  // kAuto takes the pass only with scratch for one converted group at least.
  bool convert = fp4 && fp4_pass(w, groups, total_slots, fp4_mode);
  const bool pass_fits = workspace.tc_scratch_bytes >= act + converted_group_bytes(w);
  if (convert && !pass_fits) {
    if (fp4_mode != Fp4Conversion::kAuto || !aligned(w.weight, 16) || w.group_weight_bytes % 16 != 0 ||
        mma_sync_requested()) {
      return false;
    }
    convert = false;
  }
  const bool fused = fp4 && !convert;
  const int group_slots = group_list != nullptr ? static_cast<int>(std::min<int64_t>(groups, total_slots)) : groups;
  // Few rows per expert (decode over many experts): streaming the weights once (the GEMV path)
  // beats converting and re-reading them; 16 is about where the GEMM's arithmetic wins.
  if (total_slots < int64_t{kMinRowsPerGroup} * std::min<int64_t>(groups, total_slots)) return false;
  int batch = std::min(group_slots, kMaxBatch);
  if (convert) {
    const size_t fit = (workspace.tc_scratch_bytes - act) / converted_group_bytes(w);
    batch = static_cast<int>(std::min<size_t>({static_cast<size_t>(batch), fit, static_cast<size_t>(kConvertBatch)}));
  }
  uint8_t* xq = workspace.tc_scratch;
  float* xs = reinterpret_cast<float*>(xq + align256(static_cast<size_t>(total_slots * w.in)));
  // The conversion pass's batch: wq of entry j at j * out * in bytes, ws of entry j
  // j * in/128 * out floats in.
  uint8_t* wq = workspace.tc_scratch + act;
  float* ws = reinterpret_cast<float*>(wq + align256(static_cast<size_t>(w.out * w.in)) * static_cast<size_t>(batch));

  const int64_t warps = total_slots * (w.in / 128);
  quantize_slots_kernel<<<ceil_div_u(warps, 8), 256, 0, stream>>>(x, x_stride, x_rows, total_slots, w.in, xq, xs);
  LONGCTX_CUDA_CHECK_LAUNCH();

  const bool mma_sync = mma_sync_requested();
  static bool attributes_set = false;
  if (!attributes_set) {
    for (const void* kernel : {reinterpret_cast<const void*>(&grouped_tc_kernel<true, true>),
                               reinterpret_cast<const void*>(&grouped_tc_kernel<false, true>),
                               reinterpret_cast<const void*>(&grouped_tc_kernel<true, false>),
                               reinterpret_cast<const void*>(&grouped_tc_kernel<false, false>)}) {
      LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes));
    }
    LONGCTX_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(&grouped_tc_fp4_kernel),
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, kFp4SharedBytes));
    attributes_set = true;
  }
  TcArgs a{};
  a.xq = xq;
  a.xs = xs;
  a.slots = total_slots;
  a.out = w.out;
  a.in = w.in;
  a.offsets = offsets;
  a.counts = counts;
  a.group_list = group_list;
  a.y = y;
  a.y_stride = y_stride;
  if (convert) {
    a.weight = wq;
    a.ws = ws;
  } else {
    a.weight = w.weight;
    a.scale = w.scale;
    a.group_weight_bytes = w.group_weight_bytes;
    a.group_scale_bytes = w.group_scale_bytes;
  }
  for (int begin = 0; begin < group_slots; begin += batch) {
    a.batch_begin = begin;
    a.batch_size = std::min(batch, group_slots - begin);
    if (fused) {
      grouped_tc_fp4_kernel<<<workspace.sm_count, kThreads, kFp4SharedBytes, stream>>>(a);
    } else if (convert) {
      const int64_t threads = static_cast<int64_t>(a.batch_size) * w.out * (w.in / 16);
      convert_fp4_kernel<<<ceil_div_u(threads, 256), 256, 0, stream>>>(
          w.weight, w.scale, w.group_weight_bytes, w.group_scale_bytes, w.out, w.in, group_list, begin, a.batch_size,
          wq, ws);
      LONGCTX_CUDA_CHECK_LAUNCH();
      if (mma_sync) {
        grouped_tc_kernel<false, false><<<workspace.sm_count, kThreads, kSharedBytes, stream>>>(a);
      } else {
        grouped_tc_kernel<false, true><<<workspace.sm_count, kThreads, kSharedBytes, stream>>>(a);
      }
    } else if (mma_sync) {
      grouped_tc_kernel<true, false><<<workspace.sm_count, kThreads, kSharedBytes, stream>>>(a);
    } else {
      grouped_tc_kernel<true, true><<<workspace.sm_count, kThreads, kSharedBytes, stream>>>(a);
    }
    LONGCTX_CUDA_CHECK_LAUNCH();
  }
  return true;
}

}  // namespace longctx::cuda

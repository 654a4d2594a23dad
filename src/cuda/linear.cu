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
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
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
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= rows * out) return;
  const int64_t r = index / out;
  const int64_t o = index % out;
  float total = 0.0f;
  for (int c = 0; c < chunks; ++c) total = total + partial[(static_cast<int64_t>(c) * rows + r) * out + o];
  y[r * y_stride + o] = total;
}

template <int FMT>
void launch_format(const LinearArgs& a, int variant, dim3 grid, cudaStream_t stream) {
  switch (variant) {
    case 0: linear_kernel<FMT, 4, 128, 1, 2><<<grid, kThreads, 0, stream>>>(a); break;
    case 1: linear_kernel<FMT, 16, 64, 1, 4><<<grid, kThreads, 0, stream>>>(a); break;
    default: linear_kernel<FMT, 64, 64, 4, 4><<<grid, kThreads, 0, stream>>>(a); break;
  }
}

int variant_rows(int variant) { return variant == 0 ? 4 : (variant == 1 ? 16 : 64); }
int variant_outputs(int variant) { return variant == 0 ? 128 : 64; }

void launch(LinearArgs a, int format, int groups, int64_t rows_per_group, int64_t active_groups,
            const LinearWorkspace& workspace, cudaStream_t stream) {
  if (a.in % kBK != 0) fail("CUDA linear: input size ", a.in, " is not a multiple of ", kBK);
  if (a.total_rows == 0 || a.out == 0) return;
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
    linear_finish_kernel<<<ceil_div_u(n, 256), 256, 0, stream>>>(a.partial, chunks, a.total_rows, a.out, a.y, a.y_stride);
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
  LinearArgs a = base_args(w, x, x_stride, y, y_stride);
  a.rows = rows;
  a.total_rows = rows;
  a.x_group_outputs = x_group_outputs;
  launch(a, w.format, 1, rows, 1, workspace, stream);
}

void grouped_linear(const LinearView& w, int groups, const int32_t* offsets, const int32_t* counts,
                    int64_t total_slots, const float* x, int64_t x_stride, const int32_t* x_rows,
                    float* y, int64_t y_stride, const LinearWorkspace& workspace,
                    cudaStream_t stream, const int32_t* group_list) {
  if (total_slots <= 0) return;
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
  fp8_simulate_rows_kernel<<<ceil_div_u(warps, 8), 256, 0, stream>>>(x, rows, cols, x_stride, out, out_stride);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

}  // namespace longctx::cuda

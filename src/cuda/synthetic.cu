// Random data made directly on the device, for benchmarks at full model size: linear weights in
// their stored formats and KV pages in the cache's byte layout. Nothing here is used by the
// forward itself.
//
// Values come from a counter-based hash of (seed, element index), so a buffer's contents do not
// depend on the launch shape. Weights are N(0, stddev) quantized exactly as the released
// checkpoints are (fp8 e4m3 with one power-of-two scale per 128x128 block from the block's amax,
// packed e2m1 with one per 32 inputs, or bf16); KV entries are N(0, 1) vectors stored through the
// same encoders the forward uses (warp_encode_kv / warp_encode_key), so every stored byte is a
// value the forward could have written (no NaN codes, plausible scales).
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
#include "longctx/error.h"

namespace longctx::cuda {
namespace {

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A standard normal value for element `index` of the stream `seed` (Box-Muller on 2 x 24 bits).
__device__ __forceinline__ float normal_at(uint64_t seed, uint64_t index) {
  const uint64_t bits = mix64(seed + 0x9e3779b97f4a7c15ull * (index + 1));
  const float u1 = (static_cast<float>(bits >> 40) + 1.0f) * 0x1p-24f;  // (0, 1]
  const float u2 = static_cast<float>((bits >> 16) & 0xffffffu) * 0x1p-24f;
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

__global__ void bf16_kernel(uint16_t* out, int64_t count, float stddev, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = float_to_bf16_bits(stddev * normal_at(seed, static_cast<uint64_t>(i)));
  }
}

// One block of 256 threads per 128x128 tile (grid: column tiles, row tiles, groups): the amax of
// the tile gives its scale, then every value is encoded.
__global__ void __launch_bounds__(256) fp8_kernel(uint8_t* weight, uint8_t* scale, int64_t out,
                                                  int64_t in, float stddev, uint64_t seed) {
  __shared__ float scratch[33];
  const int64_t group = blockIdx.z;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * 128;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * 128;
  const int64_t rows = min(static_cast<int64_t>(128), out - row0);
  const int64_t cols = min(static_cast<int64_t>(128), in - col0);
  const uint64_t base = static_cast<uint64_t>(group * out * in);
  float amax = 0.0f;
  for (int64_t t = threadIdx.x; t < rows * cols; t += blockDim.x) {
    const int64_t index = (row0 + t / cols) * in + col0 + t % cols;
    amax = fmaxf(amax, fabsf(stddev * normal_at(seed, base + static_cast<uint64_t>(index))));
  }
  amax = block_max(amax, scratch);
  const float block_scale = fp8_scale_from_amax(amax);
  uint8_t* codes = weight + group * out * in;
  for (int64_t t = threadIdx.x; t < rows * cols; t += blockDim.x) {
    const int64_t index = (row0 + t / cols) * in + col0 + t % cols;
    const float value = stddev * normal_at(seed, base + static_cast<uint64_t>(index));
    codes[index] = float_to_fp8(fminf(fmaxf(value / block_scale, -448.0f), 448.0f));
  }
  if (threadIdx.x == 0) {
    const int64_t scale_cols = (in + 127) / 128;
    const int64_t scale_rows = (out + 127) / 128;
    scale[group * scale_rows * scale_cols + blockIdx.y * scale_cols + blockIdx.x] =
        pow2_to_e8m0(block_scale);
  }
}

// One warp per 32 inputs of a row: packed e2m1 codes (low nibble first) and the block's scale.
__global__ void fp4_kernel(uint8_t* weight, uint8_t* scale, int64_t blocks, float stddev,
                           uint64_t seed) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
       b < blocks; b += warps) {
    // Block b covers inputs [32 b, 32 b + 32) of the flattened [groups * out, in] matrix.
    const int64_t index = b * 32 + lane;
    const float value = stddev * normal_at(seed, static_cast<uint64_t>(index));
    const float block_scale = fp4_scale_from_amax(warp_max(fabsf(value)));
    const uint32_t code = float_to_fp4_code(value / block_scale);
    const uint32_t neighbour = __shfl_down_sync(0xffffffffu, code, 1);
    if ((lane & 1) == 0) weight[index / 2] = static_cast<uint8_t>(code | (neighbour << 4));
    if (lane == 0) scale[b] = pow2_to_e8m0(block_scale);
  }
}

__global__ void floats_kernel(float* out, int64_t count, float mean, float stddev, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = mean + stddev * normal_at(seed, static_cast<uint64_t>(i));
  }
}

constexpr int kFillThreads = 256;
constexpr int kFillWarps = kFillThreads / 32;
constexpr int kMaxVector = 512;

// One block per page. Window pages: ring entries, then the compressor state (per accumulator
// [max | sum | weighted] x channels: a running max ~N(0,1), a sum >= 1, weighted ~N(0,1)).
// Compressed pages: main entries, then the indexer keys.
__global__ void __launch_bounds__(kFillThreads)
    kv_pages_kernel(KvLayerView kv, int64_t window_pages, int64_t compressed_pages,
                    int64_t state_floats, uint64_t seed) {
  __shared__ float vectors[kFillWarps][kMaxVector];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float* v = vectors[warp];
  const int64_t page = blockIdx.x;
  const bool is_window = page < window_pages;
  const int64_t id = is_window ? page : page - window_pages;
  const uint64_t page_seed =
      mix64(seed ^ (is_window ? 0x1234567ull : 0x7654321ull) ^ (static_cast<uint64_t>(id) << 20));
  if (is_window) {
    uint8_t* base = kv.window_pages + id * kv.window_page_bytes;
    for (int e = warp; e < kv.window_entries; e += kFillWarps) {
      uint8_t* entry = base + e * kv.kv_entry_bytes;
      for (int i = lane; i < kv.head_dim; i += 32)
        v[i] = normal_at(page_seed, static_cast<uint64_t>(e) * 4096 + i);
      for (int64_t i = lane; i < kv.kv_entry_bytes; i += 32)
        entry[i] = 0;  // padding stays zero
      __syncwarp();
      warp_encode_kv(v, entry, kv.kv_dtype, kv.head_dim, kv.rope_dim);
      __syncwarp();
    }
    float* state = reinterpret_cast<float*>(base + kv.state_offset);
    const int64_t main_floats = static_cast<int64_t>(kv.main_accumulators) * 3 * kv.main_channels;
    for (int64_t f = threadIdx.x; f < state_floats; f += blockDim.x) {
      const int channels = f < main_floats ? kv.main_channels : kv.index_channels;
      const int64_t within =
          (f < main_floats ? f : f - main_floats) % (3 * static_cast<int64_t>(channels));
      const float x = normal_at(page_seed ^ 0x5555ull, static_cast<uint64_t>(f));
      state[f] = within < channels ? x : (within < 2 * channels ? 1.0f + fabsf(x) : x);
    }
    return;
  }
  if (kv.compressed_pages == nullptr || kv.entries_per_page == 0) return;
  uint8_t* base = kv.compressed_pages + id * kv.compressed_page_bytes;
  for (int e = warp; e < kv.entries_per_page; e += kFillWarps) {
    uint8_t* entry = base + e * kv.kv_entry_bytes;
    for (int i = lane; i < kv.head_dim; i += 32)
      v[i] = normal_at(page_seed, static_cast<uint64_t>(e) * 4096 + i);
    for (int64_t i = lane; i < kv.kv_entry_bytes; i += 32)
      entry[i] = 0;
    __syncwarp();
    warp_encode_kv(v, entry, kv.kv_dtype, kv.head_dim, kv.rope_dim);
    __syncwarp();
    if (kv.index_channels > 0) {
      for (int i = lane; i < kv.index_dim; i += 32) {
        v[i] = normal_at(page_seed ^ 0xabcdefull, static_cast<uint64_t>(e) * 4096 + i);
      }
      __syncwarp();
      warp_encode_key(v, base + kv.indexer_offset + e * kv.indexer_key_bytes, kv.key_dtype,
                      kv.index_dim);
      __syncwarp();
    }
  }
}

unsigned int grid_for(int64_t count, int threads) {
  return static_cast<unsigned int>(std::min<int64_t>((count + threads - 1) / threads, 65536));
}

}  // namespace

void fill_linear_random(uint8_t* weight, uint8_t* scale, int format, int64_t out, int64_t in,
                        int64_t groups, float stddev, uint64_t seed, cudaStream_t stream) {
  if (out <= 0 || in <= 0 || groups <= 0) return;
  switch (format) {
    case kWeightBF16: {
      const int64_t count = groups * out * in;
      bf16_kernel<<<grid_for(count, 256), 256, 0, stream>>>(reinterpret_cast<uint16_t*>(weight),
                                                            count, stddev, seed);
      break;
    }
    case kWeightFP8: {
      const dim3 grid(ceil_div_u(in, 128), ceil_div_u(out, 128), static_cast<unsigned>(groups));
      fp8_kernel<<<grid, 256, 0, stream>>>(weight, scale, out, in, stddev, seed);
      break;
    }
    case kWeightFP4: {
      if (in % 32 != 0) fail("fill_linear_random: fp4 needs inputs divisible by 32, got ", in);
      const int64_t blocks = groups * out * (in / 32);
      fp4_kernel<<<grid_for(blocks * 32, 256), 256, 0, stream>>>(weight, scale, blocks, stddev,
                                                                 seed);
      break;
    }
    default:
      fail("fill_linear_random: unknown weight format ", format);
  }
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void fill_floats_random(float* out, int64_t count, float mean, float stddev, uint64_t seed,
                        cudaStream_t stream) {
  if (count <= 0) return;
  floats_kernel<<<grid_for(count, 256), 256, 0, stream>>>(out, count, mean, stddev, seed);
  LONGCTX_CUDA_CHECK_LAUNCH();
}

void fill_kv_pages_random(const KvLayerView& kv, int64_t window_pages, int64_t compressed_pages,
                          uint64_t seed, cudaStream_t stream) {
  if (kv.head_dim > kMaxVector || kv.index_dim > kMaxVector)
    fail("fill_kv_pages_random: vectors above ", kMaxVector);
  const int64_t state_floats = (kv.window_page_bytes - kv.state_offset) / 4;
  const int64_t pages = window_pages + (kv.compressed_pages != nullptr ? compressed_pages : 0);
  // Launched in slices: a grid dimension holds at most 2^31 - 1 blocks, and slices keep each
  // launch short.
  constexpr int64_t kSlice = 1 << 20;
  for (int64_t first = 0; first < pages; first += kSlice) {
    const int64_t count = std::min(kSlice, pages - first);
    KvLayerView shifted = kv;
    int64_t w = window_pages;
    // Shift the page bases so that block 0 of the slice is page `first` of the combined list.
    if (first < window_pages) {
      shifted.window_pages = kv.window_pages + first * kv.window_page_bytes;
      w = window_pages - first;
    } else {
      shifted.compressed_pages =
          kv.compressed_pages + (first - window_pages) * kv.compressed_page_bytes;
      w = 0;
    }
    kv_pages_kernel<<<static_cast<unsigned>(count), kFillThreads, 0, stream>>>(
        shifted, w, count - w, state_floats, seed + static_cast<uint64_t>(first));
    LONGCTX_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace longctx::cuda

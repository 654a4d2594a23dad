#include "cpu/cpu_linear.h"

#include <algorithm>
#include <vector>

#include "common/block_quant.h"
#include "common/thread_pool.h"
#include "cpu/cpu_ops.h"

namespace longctx::cpu {
namespace {

// The activations the product actually sees: fp8-simulated copies when the weight asks.
const float* prepared_activations(const LinearWeight& w, const float* x, int64_t rows,
                                  int64_t row_length, std::vector<float>& storage) {
  if (!w.quantize_activations) return x;
  storage.assign(x, x + rows * row_length);
  for (int64_t r = 0; r < rows; ++r) {
    fp8_simulate_blocks(storage.data() + r * row_length, static_cast<size_t>(row_length), 128);
  }
  return storage.data();
}

// y[r, o] = dot(x[r, input_offset(o) ...], W[o]) for every row r, parallel over outputs.
template <typename InputOffset>
void product(const LinearWeight& w, const float* x, int64_t rows, int64_t x_stride, float* y,
             InputOffset input_offset) {
  const size_t in = static_cast<size_t>(w.in);
  // Hand out outputs in ranges of at least ~256K multiply-adds: waking threads for less costs
  // more than it saves.
  const size_t work_per_output = std::max<size_t>(1, in * static_cast<size_t>(rows));
  const size_t min_outputs = std::max<size_t>(1, (size_t{1} << 18) / work_per_output);
  ThreadPool::global().parallel_for(static_cast<size_t>(w.out), [&](size_t begin, size_t end) {
    std::vector<float> weight_row(in);
    for (size_t o = begin; o < end; ++o) {
      w.decode_row(static_cast<int64_t>(o), weight_row.data());
      const float* input = x + input_offset(static_cast<int64_t>(o));
      for (int64_t r = 0; r < rows; ++r) {
        y[static_cast<size_t>(r * w.out) + o] = dot(input + r * x_stride, weight_row.data(), in);
      }
    }
  }, min_outputs);
}

}  // namespace

void linear(const LinearWeight& w, const float* x, int64_t rows, float* y) {
  std::vector<float> storage;
  const float* input = prepared_activations(w, x, rows, w.in, storage);
  product(w, input, rows, w.in, y, [](int64_t) { return int64_t{0}; });
}

void linear_grouped(const LinearWeight& w, int64_t groups, const float* x, int64_t rows, float* y) {
  const int64_t row_length = groups * w.in;
  std::vector<float> storage;
  const float* input = prepared_activations(w, x, rows, row_length, storage);
  const int64_t outputs_per_group = w.out / groups;
  product(w, input, rows, row_length, y,
          [&](int64_t o) { return (o / outputs_per_group) * w.in; });
}

void embedding(const LinearWeight& w, std::span<const int32_t> tokens, float* out) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    w.decode_row(tokens[i], out + i * static_cast<size_t>(w.in));
  }
}

}  // namespace longctx::cpu

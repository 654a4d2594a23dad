#include "cpu/cpu_ops.h"

#include <algorithm>
#include <vector>

namespace longctx::cpu {

float dot(const float* a, const float* b, size_t n) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t j = 0; j < 8; ++j) partial[j] += a[i + j] * b[i + j];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7])) + tail;
}

void rms_norm(const float* x, const float* weight, size_t n, float eps, float* out) {
  const float mean_square = dot(x, x, n) / static_cast<float>(n);
  const float inverse = 1.0f / std::sqrt(mean_square + eps);
  for (size_t i = 0; i < n; ++i) {
    const float normalized = x[i] * inverse;
    out[i] = weight != nullptr ? weight[i] * normalized : normalized;
  }
}

void hadamard_transform(float* x, size_t n) {
  for (size_t half = 1; half < n; half *= 2) {
    for (size_t start = 0; start < n; start += 2 * half) {
      for (size_t i = start; i < start + half; ++i) {
        const float a = x[i];
        const float b = x[i + half];
        x[i] = a + b;
        x[i + half] = a - b;
      }
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (size_t i = 0; i < n; ++i) x[i] *= scale;
}

void hc_split_sinkhorn(const float* mixes, const float* scale, const float* base, int64_t hc,
                       int64_t iterations, float eps, float* pre, float* post, float* comb) {
  const size_t n = static_cast<size_t>(hc);
  for (size_t j = 0; j < n; ++j) {
    pre[j] = sigmoid(mixes[j] * scale[0] + base[j]) + eps;
    post[j] = 2.0f * sigmoid(mixes[n + j] * scale[1] + base[n + j]);
  }
  for (size_t j = 0; j < n; ++j) {
    for (size_t k = 0; k < n; ++k) {
      comb[j * n + k] = mixes[2 * n + j * n + k] * scale[2] + base[2 * n + j * n + k];
    }
  }
  std::vector<float> sums(n);
  auto normalize_rows = [&](bool softmax_first) {
    for (size_t j = 0; j < n; ++j) {
      float* row = comb + j * n;
      if (softmax_first) {
        const float row_max = *std::max_element(row, row + n);
        float total = 0.0f;
        for (size_t k = 0; k < n; ++k) total += (row[k] = std::exp(row[k] - row_max));
        for (size_t k = 0; k < n; ++k) row[k] = row[k] / total + eps;
      } else {
        float total = 0.0f;
        for (size_t k = 0; k < n; ++k) total += row[k];
        for (size_t k = 0; k < n; ++k) row[k] /= total + eps;
      }
    }
  };
  auto normalize_columns = [&] {
    for (size_t k = 0; k < n; ++k) {
      float total = 0.0f;
      for (size_t j = 0; j < n; ++j) total += comb[j * n + k];
      sums[k] = total;
    }
    for (size_t j = 0; j < n; ++j) {
      for (size_t k = 0; k < n; ++k) comb[j * n + k] /= sums[k] + eps;
    }
  };
  normalize_rows(/*softmax_first=*/true);
  normalize_columns();
  for (int64_t i = 1; i < iterations; ++i) {
    normalize_rows(/*softmax_first=*/false);
    normalize_columns();
  }
}

}  // namespace longctx::cpu

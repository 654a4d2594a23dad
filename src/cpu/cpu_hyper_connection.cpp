#include "cpu/cpu_hyper_connection.h"

#include <cmath>
#include <vector>

#include "common/thread_pool.h"
#include "cpu/cpu_ops.h"

namespace longctx::cpu {
namespace {

// mixes[m] = (fn[m] . flat) * rsqrt(mean(flat^2) + eps) for the streams of one token.
void mixes_of(const HyperConnectionWeights& w, const ModelConfig& config, const float* flat,
              size_t mix_count, float* mixes) {
  const size_t n = static_cast<size_t>(config.hc_mult * config.hidden_size);
  const float inverse_rms =
      1.0f / std::sqrt(dot(flat, flat, n) / static_cast<float>(n) + static_cast<float>(config.rms_norm_eps));
  for (size_t m = 0; m < mix_count; ++m) mixes[m] = dot(w.fn.data() + m * n, flat, n) * inverse_rms;
}

void weighted_stream_sum(const float* streams, const float* weights, int64_t hc, int64_t hidden,
                         float* y) {
  for (int64_t i = 0; i < hidden; ++i) {
    float total = 0.0f;
    for (int64_t j = 0; j < hc; ++j) total += weights[j] * streams[j * hidden + i];
    y[i] = total;
  }
}

}  // namespace

void hc_pre(const HyperConnectionWeights& w, const ModelConfig& config, const float* streams,
            int64_t rows, float* y, float* post, float* comb) {
  const int64_t hc = config.hc_mult;
  const int64_t hidden = config.hidden_size;
  const size_t mix_count = static_cast<size_t>((2 + hc) * hc);
  ThreadPool::global().parallel_for(static_cast<size_t>(rows), [&](size_t begin, size_t end) {
    std::vector<float> mixes(mix_count);
    std::vector<float> pre(static_cast<size_t>(hc));
    for (size_t r = begin; r < end; ++r) {
      const float* token_streams = streams + r * static_cast<size_t>(hc * hidden);
      mixes_of(w, config, token_streams, mix_count, mixes.data());
      hc_split_sinkhorn(mixes.data(), w.scale.data(), w.base.data(), hc, config.hc_sinkhorn_iters,
                        static_cast<float>(config.hc_eps), pre.data(), post + r * static_cast<size_t>(hc),
                        comb + r * static_cast<size_t>(hc * hc));
      weighted_stream_sum(token_streams, pre.data(), hc, hidden, y + r * static_cast<size_t>(hidden));
    }
  });
}

void hc_post(const ModelConfig& config, const float* sublayer_out, const float* post,
             const float* comb, int64_t rows, float* streams) {
  const int64_t hc = config.hc_mult;
  const int64_t hidden = config.hidden_size;
  ThreadPool::global().parallel_for(static_cast<size_t>(rows), [&](size_t begin, size_t end) {
    std::vector<float> old(static_cast<size_t>(hc * hidden));
    for (size_t r = begin; r < end; ++r) {
      float* token_streams = streams + r * static_cast<size_t>(hc * hidden);
      std::copy(token_streams, token_streams + hc * hidden, old.begin());
      const float* out = sublayer_out + r * static_cast<size_t>(hidden);
      const float* token_post = post + r * static_cast<size_t>(hc);
      const float* token_comb = comb + r * static_cast<size_t>(hc * hc);
      for (int64_t k = 0; k < hc; ++k) {
        for (int64_t i = 0; i < hidden; ++i) {
          float mixed = 0.0f;
          for (int64_t j = 0; j < hc; ++j) mixed += token_comb[j * hc + k] * old[static_cast<size_t>(j * hidden + i)];
          token_streams[k * hidden + i] = token_post[k] * out[i] + mixed;
        }
      }
    }
  });
}

void hc_head(const HyperConnectionWeights& w, const ModelConfig& config, const float* streams,
             int64_t rows, float* y) {
  const int64_t hc = config.hc_mult;
  const int64_t hidden = config.hidden_size;
  ThreadPool::global().parallel_for(static_cast<size_t>(rows), [&](size_t begin, size_t end) {
    std::vector<float> mixes(static_cast<size_t>(hc));
    for (size_t r = begin; r < end; ++r) {
      const float* token_streams = streams + r * static_cast<size_t>(hc * hidden);
      mixes_of(w, config, token_streams, static_cast<size_t>(hc), mixes.data());
      for (int64_t j = 0; j < hc; ++j) {
        mixes[static_cast<size_t>(j)] =
            sigmoid(mixes[static_cast<size_t>(j)] * w.scale[0] + w.base[static_cast<size_t>(j)]) +
            static_cast<float>(config.hc_eps);
      }
      weighted_stream_sum(token_streams, mixes.data(), hc, hidden, y + r * static_cast<size_t>(hidden));
    }
  });
}

}  // namespace longctx::cpu

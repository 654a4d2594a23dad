// Prints the CUDA backend's prefill throughput and decode step time on a model folder (e.g.
// one written by `longctx make-test-model`). Figures, not a test.
// usage: cuda_forward_bench MODEL_DIR [prompt=1024] [decode_steps=32] [batch=1] [chunk=prompt]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "engine/model_session.h"
#include "engine/sequence_runner.h"

using namespace longctx;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: cuda_forward_bench MODEL_DIR [prompt] [decode_steps] [batch] [chunk]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int64_t prompt = argc > 2 ? std::stoll(argv[2]) : 1024;
  const int steps = argc > 3 ? std::stoi(argv[3]) : 32;
  const int64_t batch = argc > 4 ? std::stoll(argv[4]) : 1;
  const int64_t chunk = argc > 5 ? std::stoll(argv[5]) : prompt;
  auto model = std::make_shared<const LoadedModel>(dir);
  const ModelConfig& c = model->config();
  std::mt19937 random(1);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.vocab_size) - 1);

  SessionOptions options;
  options.device = "cuda";
  options.kv = {KvDtype::kFP8, IndexerKeyDtype::kFP4};
  options.max_tokens = prompt + steps + 8;
  options.max_sequences = batch;
  const auto load_start = Clock::now();
  ModelSession session(model, options);
  const double load = std::chrono::duration<double>(Clock::now() - load_start).count();
  KvCacheManager& kv = session.kv();
  std::vector<KvCacheManager::SequenceId> ids;
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch));
  double prefill = 0;
  for (int64_t s = 0; s < batch; ++s) {
    ids.push_back(kv.add_sequence());
    for (int64_t i = 0; i < prompt; ++i) prompts[static_cast<size_t>(s)].push_back(pick(random));
    for (int64_t begin = 0; begin < prompt; begin += chunk) {
      const int64_t size = std::min(chunk, prompt - begin);
      if (!kv.reserve(ids.back(), begin + size)) {
        std::fprintf(stderr, "KV pools too small\n");
        return 1;
      }
      ForwardBatch fb;
      const std::span<const int32_t> tokens(prompts[static_cast<size_t>(s)].data() + begin, static_cast<size_t>(size));
      fb.chunks.push_back({tokens, begin, &kv.tables(ids.back()), 1});
      ForwardOutput out;
      const auto start = Clock::now();
      session.backend().forward(fb, &out);
      if (s == 0) prefill += std::chrono::duration<double>(Clock::now() - start).count();
      kv.commit(ids.back(), tokens);
    }
  }
  std::vector<double> step_times;
  std::vector<int32_t> next(static_cast<size_t>(batch));
  for (int step = 0; step < steps; ++step) {
    ForwardBatch fb;
    for (int64_t s = 0; s < batch; ++s) {
      next[static_cast<size_t>(s)] = pick(random);
      const int64_t position = prompt + step;
      if (!kv.reserve(ids[static_cast<size_t>(s)], position + 1)) return 1;
      fb.chunks.push_back({std::span<const int32_t>(&next[static_cast<size_t>(s)], 1), position,
                           &kv.tables(ids[static_cast<size_t>(s)]), 1});
    }
    ForwardOutput out;
    const auto start = Clock::now();
    session.backend().forward(fb, &out);
    step_times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    for (int64_t s = 0; s < batch; ++s) {
      kv.commit(ids[static_cast<size_t>(s)], std::span<const int32_t>(&next[static_cast<size_t>(s)], 1));
    }
  }
  std::sort(step_times.begin() + 1, step_times.end());
  const double median = step_times[1 + (step_times.size() - 1) / 2];
  std::printf("model %s: %lld layers, hidden %lld, %lld experts; kv fp8/fp4; load+upload %.2f s\n", dir.c_str(),
              static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.n_routed_experts), load);
  std::printf("prefill %lld tokens (chunk %lld): %.3f s, %.0f tokens/s\n", static_cast<long long>(prompt),
              static_cast<long long>(chunk), prefill, static_cast<double>(prompt) / prefill);
  std::printf("decode batch %lld at context %lld: median step %.2f ms (%.0f tokens/s)\n", static_cast<long long>(batch),
              static_cast<long long>(prompt), median * 1e3, static_cast<double>(batch) / median);
  return 0;
}

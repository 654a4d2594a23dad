// Prints the CPU reference backend's prefill throughput and decode step time on a generated
// test model. Figures, not a test: usage: cpu_forward_bench [preset=tiny] [tokens=512] [layers]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include "common/thread_pool.h"
#include "engine/model_session.h"
#include "engine/sequence_runner.h"
#include "model/test_model.h"

using namespace longctx;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  const std::string preset = argc > 1 ? argv[1] : "tiny";
  const int64_t tokens = argc > 2 ? std::stoll(argv[2]) : 512;
  const int64_t layers = argc > 3 ? std::stoll(argv[3]) : -1;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("longctx_bench_" + preset);
  TestModelOptions options;
  options.config = test_model_preset(preset, layers);
  if (preset != "tiny") options.config.n_routed_experts = 8;  // keep the weights small
  write_test_model(options, dir.string());
  auto model = std::make_shared<const LoadedModel>(dir.string());

  std::mt19937 random(1);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(model->config().vocab_size) - 1);
  std::vector<int32_t> prompt(static_cast<size_t>(tokens));
  for (auto& t : prompt) t = pick(random);

  SessionOptions session_options;
  session_options.max_tokens = tokens + 64;
  ModelSession session(model, session_options);
  SequenceRunner runner(session.backend(), session.kv());
  const auto prefill_start = Clock::now();
  runner.run(prompt, 1);
  runner.commit();
  const double prefill = std::chrono::duration<double>(Clock::now() - prefill_start).count();
  const int decode_steps = 32;
  const auto decode_start = Clock::now();
  for (int i = 0; i < decode_steps; ++i) {
    const int32_t token = pick(random);
    runner.run(std::span<const int32_t>(&token, 1), 1);
    runner.commit();
  }
  const double decode = std::chrono::duration<double>(Clock::now() - decode_start).count() / decode_steps;
  std::printf("preset %s, %lld layers, %zu threads\n", preset.c_str(),
              static_cast<long long>(model->config().num_hidden_layers), ThreadPool::global().num_threads());
  std::printf("prefill of %lld tokens: %.3f s (%.1f tokens/s)\n", static_cast<long long>(tokens), prefill,
              static_cast<double>(tokens) / prefill);
  std::printf("decode step at context %lld: %.2f ms\n", static_cast<long long>(tokens), decode * 1e3);
  std::filesystem::remove_all(dir);
  return 0;
}

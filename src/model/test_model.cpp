#include "model/test_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "common/block_quant.h"
#include "common/float_formats.h"
#include "common/json_util.h"
#include "common/thread_pool.h"
#include "longctx/error.h"
#include "model/param_specs.h"
#include "model/safetensors_writer.h"

namespace longctx {
namespace {

namespace fs = std::filesystem;

// splitmix64: a small, portable generator so the same seed gives the same model everywhere.
struct Random {
  uint64_t state;
  explicit Random(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }  // [0, 1)
  float normal() {  // Box-Muller
    const double u1 = 1.0 - uniform();
    const double u2 = uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
};

uint64_t hash_name(const std::string& name, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (const char c : name) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

// Fills a [rows, cols] fp32 matrix with mean + stddev * N(0, 1), one stream per row so the
// result does not depend on the thread count.
std::vector<float> random_matrix(const std::string& name, uint64_t seed, int64_t rows,
                                 int64_t cols, float mean, float stddev) {
  std::vector<float> values(static_cast<size_t>(rows * cols));
  const uint64_t base = hash_name(name, seed);
  ThreadPool::global().parallel_for(static_cast<size_t>(rows), [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r) {
      Random random(base + 0x632be59bd9b4e019ull * (r + 1));
      float* row = values.data() + r * static_cast<size_t>(cols);
      for (int64_t c = 0; c < cols; ++c) row[c] = mean + stddev * random.normal();
    }
  }, 16);
  return values;
}

std::vector<uint8_t> to_bytes_f32(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<uint8_t> to_bytes_bf16(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t bits = float_to_bf16(values[i]);
    std::memcpy(bytes.data() + 2 * i, &bits, 2);
  }
  return bytes;
}

// fp8 e4m3 with one power-of-two scale per 128x128 block.
void add_fp8_linear(SafetensorsWriter& writer, const std::string& name,
                    const std::vector<float>& w, int64_t out, int64_t in) {
  const int64_t block_rows = (out + 127) / 128;
  const int64_t block_cols = (in + 127) / 128;
  std::vector<uint8_t> codes(static_cast<size_t>(out * in));
  std::vector<uint8_t> scales(static_cast<size_t>(block_rows * block_cols));
  for (int64_t br = 0; br < block_rows; ++br) {
    for (int64_t bc = 0; bc < block_cols; ++bc) {
      float amax = 0.0f;
      for (int64_t r = br * 128; r < std::min(out, br * 128 + 128); ++r) {
        for (int64_t c = bc * 128; c < std::min(in, bc * 128 + 128); ++c) {
          amax = std::max(amax, std::fabs(w[static_cast<size_t>(r * in + c)]));
        }
      }
      const float scale = pow2_ceil(std::max(amax, 1e-4f) / kFp8E4m3Max);
      scales[static_cast<size_t>(br * block_cols + bc)] = float_to_e8m0(scale);
      for (int64_t r = br * 128; r < std::min(out, br * 128 + 128); ++r) {
        for (int64_t c = bc * 128; c < std::min(in, bc * 128 + 128); ++c) {
          const size_t i = static_cast<size_t>(r * in + c);
          codes[i] = float_to_fp8_e4m3(w[i] / scale);
        }
      }
    }
  }
  writer.add(name + ".weight", DType::kF8E4M3, {out, in}, std::move(codes));
  writer.add(name + ".scale", DType::kF8E8M0, {block_rows, block_cols}, std::move(scales));
}

// e2m1 packed two per byte (low nibble first) with one power-of-two scale per 32 inputs.
void add_fp4_linear(SafetensorsWriter& writer, const std::string& name,
                    const std::vector<float>& w, int64_t out, int64_t in) {
  std::vector<uint8_t> packed(static_cast<size_t>(out * in / 2));
  std::vector<uint8_t> scales(static_cast<size_t>(out * in / 32));
  for (int64_t r = 0; r < out; ++r) {
    fp4_quantize_blocks(w.data() + r * in, static_cast<size_t>(in), 32,
                        packed.data() + r * in / 2, scales.data() + r * in / 32);
  }
  writer.add(name + ".weight", DType::kI8, {out, in / 2}, std::move(packed));
  writer.add(name + ".scale", DType::kF8E8M0, {out, in / 32}, std::move(scales));
}

void add_param(SafetensorsWriter& writer, const ParamSpec& spec, const ModelConfig& config,
               uint64_t seed) {
  const int64_t rows = spec.shape.at(0);
  const int64_t cols = spec.shape.size() > 1 ? spec.shape[1] : 1;
  const std::string& name = spec.name;
  switch (spec.kind) {
    case ParamKind::kLinear: {
      const std::vector<float> w =
          random_matrix(name, seed, rows, cols, 0.0f, 1.0f / std::sqrt(static_cast<float>(cols)));
      switch (spec.format) {
        case WeightFormat::kBF16:
          writer.add(name + ".weight", DType::kBF16, spec.shape, to_bytes_bf16(w));
          break;
        case WeightFormat::kFP8: add_fp8_linear(writer, name, w, rows, cols); break;
        case WeightFormat::kFP4: add_fp4_linear(writer, name, w, rows, cols); break;
      }
      return;
    }
    case ParamKind::kEmbedding:
      writer.add(name, DType::kBF16, spec.shape,
                 to_bytes_bf16(random_matrix(name, seed, rows, cols, 0.0f, 1.0f)));
      return;
    case ParamKind::kNorm:
      writer.add(name, DType::kBF16, spec.shape,
                 to_bytes_bf16(random_matrix(name, seed, rows, 1, 1.0f, 0.1f)));
      return;
    case ParamKind::kApe:
      writer.add(name, DType::kF32, spec.shape,
                 to_bytes_f32(random_matrix(name, seed, rows, cols, 0.0f, 1.0f)));
      return;
    case ParamKind::kSink:
      writer.add(name, DType::kF32, spec.shape,
                 to_bytes_f32(random_matrix(name, seed, rows, 1, 0.0f, 1.0f)));
      return;
    case ParamKind::kGateBias:
      writer.add(name, DType::kF32, spec.shape,
                 to_bytes_f32(random_matrix(name, seed, rows, 1, 0.0f, 0.1f)));
      return;
    case ParamKind::kHcFn:
      writer.add(name, DType::kF32, spec.shape,
                 to_bytes_f32(random_matrix(name, seed, rows, cols, 0.0f,
                                            1.0f / std::sqrt(static_cast<float>(cols)))));
      return;
    case ParamKind::kHcBase:
      writer.add(name, DType::kF32, spec.shape,
                 to_bytes_f32(random_matrix(name, seed, rows, 1, 0.0f, 1.0f)));
      return;
    case ParamKind::kHcScale:
      writer.add(name, DType::kF32, spec.shape,
                 to_bytes_f32(random_matrix(name, seed, rows, 1, 1.0f, 0.25f)));
      return;
    case ParamKind::kTid2eid: {
      // Each token id routes to num_experts_per_tok distinct experts.
      const int64_t experts = config.n_routed_experts;
      std::vector<uint8_t> bytes(static_cast<size_t>(rows * cols) * 8);
      Random random(hash_name(name, seed));
      std::vector<int64_t> pool(static_cast<size_t>(experts));
      for (int64_t r = 0; r < rows; ++r) {
        std::iota(pool.begin(), pool.end(), 0);
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t pick = c + static_cast<int64_t>(random.next() % static_cast<uint64_t>(experts - c));
          std::swap(pool[static_cast<size_t>(c)], pool[static_cast<size_t>(pick)]);
          std::memcpy(bytes.data() + 8 * static_cast<size_t>(r * cols + c), &pool[static_cast<size_t>(c)], 8);
        }
      }
      writer.add(name, DType::kI64, spec.shape, std::move(bytes));
      return;
    }
  }
}

std::vector<int> alternating_ratios(int first_a, int first_b, int64_t num_layers) {
  std::vector<int> ratios;
  for (int64_t i = 0; i < num_layers; ++i) {
    if (i < 2) {
      ratios.push_back(i == 0 ? first_a : first_b);
    } else {
      ratios.push_back(i % 2 == 0 ? 4 : 128);
    }
  }
  ratios.push_back(0);  // the MTP block attends through its window only
  return ratios;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create ", path.string());
  out << text;
  if (!out) fail("cannot write ", path.string());
}

}  // namespace

std::vector<int> preset_compress_ratios(const std::string& name, int64_t num_layers) {
  if (name == "tiny") {
    std::vector<int> ratios;
    for (int64_t i = 0; i < num_layers; ++i) ratios.push_back(i == 0 ? 0 : (i % 2 == 1 ? 4 : 128));
    ratios.push_back(0);
    return ratios;
  }
  if (name == "flash") return alternating_ratios(0, 0, num_layers);
  if (name == "pro") return alternating_ratios(128, 128, num_layers);
  fail("unknown preset '", name, "' (expected tiny, flash or pro)");
}

ModelConfig test_model_preset(const std::string& name, int64_t num_layers) {
  ModelConfig c;
  c.num_nextn_predict_layers = 1;
  c.num_key_value_heads = 1;
  c.qk_rope_head_dim = 64;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  c.hc_eps = 1e-6;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000;
  c.compress_rope_theta = 160000;
  c.rope_scaling = {true, 16.0, 65536, 32.0, 1.0};
  c.scoring_func = ScoringFunc::kSqrtSoftplus;
  c.norm_topk_prob = true;
  c.swiglu_limit = 10.0;
  c.max_position_embeddings = 1048576;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  c.n_shared_experts = 1;
  c.num_hash_layers = 3;
  c.linear_format = WeightFormat::kFP8;
  c.expert_format = WeightFormat::kFP4;
  if (name == "tiny") {
    c.vocab_size = 1024;
    c.hidden_size = 128;
    c.num_hidden_layers = num_layers > 0 ? num_layers : 4;
    c.num_attention_heads = 4;
    c.head_dim = 128;
    c.q_lora_rank = 128;
    c.o_groups = 2;
    c.o_lora_rank = 128;
    c.sliding_window = 16;
    c.index_n_heads = 4;
    c.index_head_dim = 64;
    c.index_topk = 8;
    c.n_routed_experts = 8;
    c.num_experts_per_tok = 2;
    c.moe_intermediate_size = 128;
    c.num_hash_layers = 2;
    c.routed_scaling_factor = 1.5;
  } else if (name == "flash") {
    c.vocab_size = 129280;
    c.hidden_size = 4096;
    c.num_hidden_layers = num_layers > 0 ? num_layers : 43;
    c.num_attention_heads = 64;
    c.head_dim = 512;
    c.q_lora_rank = 1024;
    c.o_groups = 8;
    c.o_lora_rank = 1024;
    c.sliding_window = 128;
    c.index_n_heads = 64;
    c.index_head_dim = 128;
    c.index_topk = 512;
    c.n_routed_experts = 256;
    c.num_experts_per_tok = 6;
    c.moe_intermediate_size = 2048;
    c.routed_scaling_factor = 1.5;
  } else if (name == "pro") {
    c.vocab_size = 129280;
    c.hidden_size = 7168;
    c.num_hidden_layers = num_layers > 0 ? num_layers : 61;
    c.num_attention_heads = 128;
    c.head_dim = 512;
    c.q_lora_rank = 1536;
    c.o_groups = 16;
    c.o_lora_rank = 1024;
    c.sliding_window = 128;
    c.index_n_heads = 64;
    c.index_head_dim = 128;
    c.index_topk = 1024;
    c.n_routed_experts = 384;
    c.num_experts_per_tok = 6;
    c.moe_intermediate_size = 3072;
    c.routed_scaling_factor = 2.5;
  } else {
    fail("unknown preset '", name, "' (expected tiny, flash or pro)");
  }
  c.num_hash_layers = std::min(c.num_hash_layers, c.num_hidden_layers);
  c.compress_ratios = preset_compress_ratios(name, c.num_hidden_layers);
  return c;
}

void write_test_model(const TestModelOptions& options, const std::string& out_dir) {
  const ModelConfig& config = options.config;
  config.validate();
  if (options.num_shards < 1) fail("make-test-model: --shards must be >= 1");
  fs::create_directories(out_dir);

  const std::vector<ParamSpec> specs = model_param_specs(config);
  size_t total_params = 0;
  for (const ParamSpec& spec : specs) {
    total_params += static_cast<size_t>(std::accumulate(spec.shape.begin(), spec.shape.end(),
                                                        int64_t{1}, std::multiplies<>()));
  }
  // Parameters go to shards in order, a new shard starting once the current one holds its
  // share of the parameters, as the released checkpoints are split.
  const size_t per_shard = (total_params + static_cast<size_t>(options.num_shards) - 1) /
                           static_cast<size_t>(options.num_shards);
  std::vector<SafetensorsWriter> shards(static_cast<size_t>(options.num_shards));
  size_t shard = 0;
  size_t in_shard = 0;
  for (const ParamSpec& spec : specs) {
    if (in_shard >= per_shard && shard + 1 < shards.size()) {
      ++shard;
      in_shard = 0;
    }
    add_param(shards[shard], spec, config, options.seed);
    in_shard += static_cast<size_t>(std::accumulate(spec.shape.begin(), spec.shape.end(),
                                                    int64_t{1}, std::multiplies<>()));
  }

  Json weight_map = Json::object();
  size_t total_size = 0;
  const int n = options.num_shards;
  for (int i = 0; i < n; ++i) {
    char file_name[64];
    std::snprintf(file_name, sizeof(file_name), "model-%05d-of-%05d.safetensors", i + 1, n);
    const SafetensorsWriter& writer = shards[static_cast<size_t>(i)];
    writer.write((fs::path(out_dir) / file_name).string());
    for (const std::string& name : writer.names()) weight_map[name] = file_name;
    total_size += writer.total_bytes();
  }
  const Json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  write_text(fs::path(out_dir) / "model.safetensors.index.json", index.dump(2) + "\n");
  write_text(fs::path(out_dir) / "config.json", model_config_to_json(config));
  const Json generation = {{"_from_model_config", true},
                           {"bos_token_id", config.bos_token_id},
                           {"eos_token_id", config.eos_token_id},
                           {"do_sample", true},
                           {"temperature", 1.0},
                           {"top_p", 1.0}};
  write_text(fs::path(out_dir) / "generation_config.json", generation.dump(2) + "\n");

  if (!options.tokenizer_dir.empty()) {
    for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
      const fs::path source = fs::path(options.tokenizer_dir) / file;
      if (fs::exists(source)) {
        fs::copy_file(source, fs::path(out_dir) / file, fs::copy_options::overwrite_existing);
      } else if (std::strcmp(file, "tokenizer.json") == 0) {
        fail("make-test-model: ", source.string(), " does not exist");
      }
    }
  }
}

}  // namespace longctx

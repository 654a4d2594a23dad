#include "model/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "longctx/error.h"
#include "model/model_weights.h"
#include "model/safetensors_writer.h"
#include "model/test_model.h"

namespace longctx {
namespace {

namespace fs = std::filesystem;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           (std::string("longctx_ckpt_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    TestModelOptions options;
    options.config = test_model_preset("tiny");
    options.seed = 7;
    write_test_model(options, dir_.string());
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Rewrites the shard holding `name`, letting `edit` change the tensor list.
  template <typename Edit>
  void rewrite_shard_with(const std::string& name, Edit edit) {
    for (const auto& entry : fs::directory_iterator(dir_)) {
      if (entry.path().extension() != ".safetensors") continue;
      bool holds = false;
      SafetensorsWriter writer;
      {
        SafetensorsFile file(entry.path().string());
        for (const TensorInfo& info : file.tensors()) {
          std::vector<uint8_t> bytes(info.data, info.data + info.num_bytes);
          DType dtype = info.dtype;
          std::vector<int64_t> shape = info.shape;
          if (info.name == name) {
            holds = true;
            if (!edit(dtype, shape, bytes)) continue;  // dropped
          }
          writer.add(info.name, dtype, shape, std::move(bytes));
        }
      }
      if (holds) writer.write(entry.path().string());
    }
  }

  std::string load_error() {
    try {
      LoadedModel model(dir_.string());
    } catch (const Error& error) {
      return error.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(CheckpointTest, TestModelLoadsWithEveryParameterBound) {
  LoadedModel model(dir_.string());
  const ModelWeights& w = model.weights();
  EXPECT_EQ(w.layers.size(), 4u);
  EXPECT_EQ(w.mtp.size(), 1u);
  EXPECT_EQ(w.layers[1].attn.wq_a.format, WeightFormat::kFP8);
  EXPECT_TRUE(w.layers[1].attn.wq_a.quantize_activations);
  EXPECT_FALSE(w.layers[1].attn.wo_a.quantize_activations);
  EXPECT_EQ(w.layers[1].ffn.experts[0].w1.format, WeightFormat::kFP4);
  EXPECT_TRUE(w.layers[1].attn.indexer.has_value());
  EXPECT_FALSE(w.layers[2].attn.indexer.has_value());
  EXPECT_TRUE(w.layers[2].attn.compressor.has_value());
  EXPECT_FALSE(w.layers[0].attn.compressor.has_value());
  EXPECT_TRUE(w.layers[0].hash_routing);
  EXPECT_FALSE(w.layers[2].hash_routing);
  EXPECT_EQ(w.layers[0].ffn.tid2eid.size(), static_cast<size_t>(1024 * 2));
  EXPECT_EQ(w.hc_head.fn.size(), static_cast<size_t>(4 * 4 * 128));
  // Test models are reproducible.
  const fs::path again = dir_.string() + "_again";
  TestModelOptions options;
  options.config = test_model_preset("tiny");
  options.seed = 7;
  write_test_model(options, again.string());
  std::ifstream a(dir_ / "model-00001-of-00002.safetensors", std::ios::binary);
  std::ifstream b(again / "model-00001-of-00002.safetensors", std::ios::binary);
  EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), {}, std::istreambuf_iterator<char>(b)));
  fs::remove_all(again);
}

TEST_F(CheckpointTest, MissingTensorIsNamed) {
  rewrite_shard_with("layers.2.attn.wkv.weight", [](auto&, auto&, auto&) { return false; });
  const std::string message = load_error();
  EXPECT_NE(message.find("layers.2.attn.wkv.weight"), std::string::npos) << message;
}

TEST_F(CheckpointTest, WrongDtypeIsNamedWithExpectedAndFound) {
  rewrite_shard_with("layers.1.attn.wq_a.weight", [](DType& dtype, auto& shape, auto& bytes) {
    dtype = DType::kU8;
    (void)shape;
    (void)bytes;
    return true;
  });
  const std::string message = load_error();
  EXPECT_NE(message.find("tensor layers.1.attn.wq_a.weight: expected F8_E4M3 [128, 128], found U8 [128, 128]"),
            std::string::npos)
      << message;
}

TEST_F(CheckpointTest, WrongShapeIsNamedWithExpectedAndFound) {
  rewrite_shard_with("norm.weight", [](auto&, std::vector<int64_t>& shape, std::vector<uint8_t>& bytes) {
    shape = {64};
    bytes.resize(128);
    return true;
  });
  const std::string message = load_error();
  EXPECT_NE(message.find("tensor norm.weight: expected BF16 [128], found BF16 [64]"), std::string::npos)
      << message;
}

TEST_F(CheckpointTest, TruncatedShardIsReported) {
  const fs::path shard = dir_ / "model-00002-of-00002.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 100);
  const std::string message = load_error();
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
}

TEST_F(CheckpointTest, OutOfRangeHashTableEntryIsRejected) {
  rewrite_shard_with("layers.0.ffn.gate.tid2eid", [](auto&, auto&, std::vector<uint8_t>& bytes) {
    bytes[8] = 99;  // second entry of the first row
    return true;
  });
  const std::string message = load_error();
  EXPECT_NE(message.find("routes to expert 99"), std::string::npos) << message;
}

TEST_F(CheckpointTest, IndexNamingAMissingShardIsReported) {
  fs::remove(dir_ / "model-00002-of-00002.safetensors");
  const std::string message = load_error();
  EXPECT_NE(message.find("model-00002-of-00002.safetensors"), std::string::npos) << message;
}

TEST_F(CheckpointTest, IndexWithPathTraversalIsRejected) {
  std::ofstream(dir_ / "model.safetensors.index.json")
      << R"({"weight_map": {"embed.weight": "../etc/passwd"}})";
  EXPECT_NE(load_error().find("not a plain file name"), std::string::npos);
}

TEST(NormalizeTensorName, MapsHuggingFaceSpellings) {
  EXPECT_EQ(normalize_tensor_name("model.layers.3.self_attn.wkv.weight_scale_inv"),
            "layers.3.attn.wkv.scale");
  EXPECT_EQ(normalize_tensor_name("model.layers.3.mlp.gate.e_score_correction_bias"),
            "layers.3.ffn.gate.bias");
  EXPECT_EQ(normalize_tensor_name("embed.weight"), "embed.weight");
}

}  // namespace
}  // namespace longctx

#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "longctx/error.h"
#include "model/safetensors_writer.h"

namespace longctx {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("longctx_st_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write_raw(const std::string& header, const std::string& data) {
    const std::string path = (dir_ / "raw.safetensors").string();
    std::ofstream out(path, std::ios::binary);
    const uint64_t length = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(length >> (8 * i)));
    out << header << data;
    return path;
  }

  std::string error_of(const std::string& path) {
    try {
      SafetensorsFile file(path);
    } catch (const Error& error) {
      return error.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, WritesAndReadsBack) {
  SafetensorsWriter writer;
  writer.add("a", DType::kF32, {2, 2}, std::vector<uint8_t>(16, 1));
  writer.add("b.weight", DType::kBF16, {3}, std::vector<uint8_t>{1, 2, 3, 4, 5, 6});
  const std::string path = (dir_ / "ok.safetensors").string();
  writer.write(path);
  SafetensorsFile file(path);
  ASSERT_EQ(file.tensors().size(), 2u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  for (const TensorInfo& info : file.tensors()) {
    if (info.name == "b.weight") {
      EXPECT_EQ(info.dtype, DType::kBF16);
      EXPECT_EQ(info.shape, std::vector<int64_t>{3});
      EXPECT_EQ(info.data[5], 6);
    }
  }
}

TEST_F(SafetensorsTest, TruncatedFileNamesTheTensor) {
  const std::string message = error_of(write_raw(
      R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')));
  EXPECT_NE(message.find("tensor w"), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, HeaderLengthOverflow) {
  const std::string path = (dir_ / "huge.safetensors").string();
  std::ofstream(path, std::ios::binary) << std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10);
  const std::string message = error_of(path);
  EXPECT_NE(message.find("header length"), std::string::npos) << message;
  const std::string past_end = (dir_ / "past.safetensors").string();
  std::ofstream(past_end, std::ios::binary) << std::string("\x00\x10\x00\x00\x00\x00\x00\x00{}", 10);
  EXPECT_NE(error_of(past_end).find("runs past the end"), std::string::npos);
}

TEST_F(SafetensorsTest, TinyFileHasNoHeader) {
  const std::string path = (dir_ / "tiny.safetensors").string();
  std::ofstream(path, std::ios::binary) << "abc";
  EXPECT_NE(error_of(path).find("no header"), std::string::npos);
}

TEST_F(SafetensorsTest, ShapeAndByteLengthMustAgree) {
  const std::string message = error_of(write_raw(
      R"({"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,6]}})", std::string(8, '\0')));
  EXPECT_NE(message.find("tensor w: BF16 [4] needs 8 bytes but data_offsets span 6"),
            std::string::npos)
      << message;
}

TEST_F(SafetensorsTest, OverlapsAndBadEntriesAreRejected) {
  EXPECT_NE(error_of(write_raw(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                               R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                               std::string(8, '\0')))
                .find("overlap"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"a":{"dtype":"Q7","shape":[4],"data_offsets":[0,4]}})", "1234"))
                .find("unsupported dtype"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"a":{"dtype":"U8","shape":[-4],"data_offsets":[0,4]}})", "1234"))
                .find("non-negative"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}})", "1234"))
                .find("reversed"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"a":{"dtype":"U8","shape":[4]}})", "1234")).find("data_offsets"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"a": [1,2)", "")).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(write_raw(R"([1,2])", "")).find("not a JSON object"), std::string::npos);
  EXPECT_NE(error_of(write_raw(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "1234"))
                .find("tensor a"),
            std::string::npos);
}

}  // namespace
}  // namespace longctx

#include "support/test_model_dir.h"

#include <unistd.h>

#include <filesystem>
#include <map>
#include <mutex>

#include "model/test_model.h"

namespace longctx::testing {
namespace {

namespace fs = std::filesystem;

struct Folders {
  std::mutex mutex;
  std::map<std::string, std::string> written;
  ~Folders() {
    for (const auto& [name, dir] : written) {
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    }
  }
};

Folders& folders() {
  static Folders instance;
  return instance;
}

}  // namespace

std::string test_model_dir(const std::string& name, const ModelConfig& config, uint64_t seed) {
  Folders& all = folders();
  std::lock_guard<std::mutex> lock(all.mutex);
  const auto it = all.written.find(name);
  if (it != all.written.end()) return it->second;
  const fs::path dir = fs::temp_directory_path() /
                       ("longctx_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  TestModelOptions options;
  options.config = config;
  options.seed = seed;
  write_test_model(options, dir.string());
  all.written[name] = dir.string();
  return dir.string();
}

const std::string& tiny_model_dir() {
  static const std::string dir = test_model_dir("tiny", test_model_preset("tiny"), 0);
  return dir;
}

}  // namespace longctx::testing

#include "longctx/error.h"
#include "model/safetensors_writer.h"

namespace longctx::testing {

void rewrite_tensor(const std::string& dir, const std::string& name,
                    const std::function<void(std::vector<uint8_t>& bytes, const TensorInfo& info)>& edit) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    bool holds = false;
    SafetensorsWriter writer;
    {
      SafetensorsFile file(entry.path().string());
      for (const TensorInfo& info : file.tensors()) {
        std::vector<uint8_t> bytes(info.data, info.data + info.num_bytes);
        if (info.name == name) {
          holds = true;
          edit(bytes, info);
        }
        writer.add(info.name, info.dtype, info.shape, std::move(bytes));
      }
    }
    if (holds) {
      writer.write(entry.path().string());
      return;
    }
  }
  fail("rewrite_tensor: ", name, " is not in ", dir);
}

}  // namespace longctx::testing

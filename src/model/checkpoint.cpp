#include "model/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "common/json_util.h"
#include "common/log.h"
#include "longctx/error.h"

namespace longctx {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxIndexBytes = 64u << 20;

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

// Shard file names listed by the index, or every *.safetensors of the folder.
std::vector<std::string> shard_files(const std::string& dir,
                                     std::map<std::string, std::string>* weight_map) {
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> files;
  if (fs::exists(index_path)) {
    const Json index = read_json_file(index_path.string(), kMaxIndexBytes);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      fail(index_path.string(), ": missing the weight_map object");
    }
    std::set<std::string> unique;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) fail(index_path.string(), ": weight_map[", name, "] is not a file name");
      const std::string file_name = file.get<std::string>();
      if (file_name.empty() || file_name.find('/') != std::string::npos || file_name == ".." ||
          file_name == ".") {
        fail(index_path.string(), ": weight_map[", name, "] = \"", file_name,
             "\" is not a plain file name in the checkpoint folder");
      }
      (*weight_map)[name] = file_name;
      unique.insert(file_name);
    }
    files.assign(unique.begin(), unique.end());
  } else {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file() && entry.path().extension() == ".safetensors") {
        files.push_back(entry.path().filename().string());
      }
    }
    std::sort(files.begin(), files.end());
  }
  if (files.empty()) fail(dir, ": no *.safetensors files");
  return files;
}

}  // namespace

std::string normalize_tensor_name(const std::string& name) {
  std::string normalized = name;
  if (normalized.rfind("model.", 0) == 0) normalized.erase(0, 6);
  replace_all(normalized, "self_attn", "attn");
  replace_all(normalized, ".mlp.", ".ffn.");
  replace_all(normalized, "weight_scale_inv", "scale");
  replace_all(normalized, "e_score_correction_bias", "bias");
  return normalized;
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) fail(dir, " is not a checkpoint folder");
  config_ = load_model_config((fs::path(dir) / "config.json").string());

  std::map<std::string, std::string> weight_map;
  for (const std::string& file_name : shard_files(dir, &weight_map)) {
    const fs::path path = fs::path(dir) / file_name;
    if (!fs::exists(path)) fail(dir, ": shard ", file_name, " named by the index is missing");
    files_.push_back(std::make_unique<SafetensorsFile>(path.string()));
    for (const TensorInfo& info : files_.back()->tensors()) {
      const std::string name = normalize_tensor_name(info.name);
      if (!tensors_.emplace(name, info).second) {
        fail(dir, ": tensor ", name, " appears twice (", tensors_.at(name).file, " and ", info.file, ")");
      }
      auto listed = weight_map.find(info.name);
      if (!weight_map.empty() && listed != weight_map.end() && listed->second != file_name) {
        fail(dir, ": tensor ", info.name, " is in ", file_name, " but the index says ", listed->second);
      }
    }
  }
  for (const auto& [name, file_name] : weight_map) {
    if (!tensors_.count(normalize_tensor_name(name))) {
      fail(dir, ": tensor ", name, " is listed in the index for ", file_name, " but not stored there");
    }
  }
}

const TensorInfo& Checkpoint::get(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(dir_, ": tensor ", name, " is missing from the checkpoint");
  return it->second;
}

const TensorInfo& Checkpoint::expect(const std::string& name, DType dtype,
                                     const std::vector<int64_t>& shape) const {
  const TensorInfo& info = get(name);
  if (info.dtype != dtype || info.shape != shape) {
    fail("tensor ", name, ": expected ", dtype_name(dtype), " ", shape_to_string(shape), ", found ",
         info.describe());
  }
  return info;
}

size_t Checkpoint::total_bytes() const {
  size_t total = 0;
  for (const auto& [name, info] : tensors_) total += info.num_bytes;
  return total;
}

}  // namespace longctx

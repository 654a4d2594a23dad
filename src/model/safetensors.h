// Reader for the safetensors format: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}}, then the tensor bytes. Files are memory-mapped and
// every header is validated before any tensor byte is touched, so a corrupt or truncated file
// gives an error naming the tensor instead of an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/mapped_file.h"

namespace longctx {

enum class DType { kBF16, kF16, kF32, kF8E4M3, kF8E8M0, kI8, kU8, kI32, kI64, kBool };

const char* dtype_name(DType dtype);  // the safetensors spelling: "BF16", "F8_E4M3", ...
size_t dtype_size(DType dtype);
bool parse_dtype(const std::string& name, DType* dtype);
std::string shape_to_string(const std::vector<int64_t>& shape);

struct TensorInfo {
  std::string name;  // as stored in the file
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the file's mapping; not necessarily aligned
  size_t num_bytes = 0;
  std::string file;  // path of the file holding it

  int64_t num_elements() const;
  std::string describe() const;  // "BF16 [512, 4096]"
};

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws Error on any inconsistency.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Largest header accepted; the released shards have headers of a few hundred KB.
inline constexpr size_t kMaxSafetensorsHeaderBytes = 100u << 20;

}  // namespace longctx

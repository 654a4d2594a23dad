// Writes safetensors files: tensors are added in memory, then written with a JSON header
// padded to 8 bytes, as the reference library does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/safetensors.h"

namespace longctx {

class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape,
           std::vector<uint8_t> bytes);
  size_t total_bytes() const { return total_bytes_; }
  size_t size() const { return tensors_.size(); }
  std::vector<std::string> names() const;
  // Writes the tensors to `path`; throws Error on I/O failure.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> tensors_;
  size_t total_bytes_ = 0;
};

}  // namespace longctx

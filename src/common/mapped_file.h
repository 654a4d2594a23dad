// A read-only memory map of a whole file (RAII). Checkpoint tensors are views into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace longctx {

class MappedFile {
 public:
  // Maps `path` read-only; throws Error naming the file if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  void release();

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) file into a string; throws Error if it is missing or larger than
// max_bytes.
std::string read_text_file(const std::string& path, size_t max_bytes);

}  // namespace longctx

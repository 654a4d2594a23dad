#include "model/safetensors_writer.h"

#include <fstream>

#include "common/json_util.h"
#include "longctx/error.h"

namespace longctx {

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            std::vector<uint8_t> bytes) {
  int64_t elements = 1;
  for (const int64_t dim : shape) elements *= dim;
  if (static_cast<size_t>(elements) * dtype_size(dtype) != bytes.size()) {
    fail("safetensors writer: tensor ", name, " ", dtype_name(dtype), " ", shape_to_string(shape),
         " given ", bytes.size(), " bytes");
  }
  total_bytes_ += bytes.size();
  tensors_.push_back({name, dtype, std::move(shape), std::move(bytes)});
}

std::vector<std::string> SafetensorsWriter::names() const {
  std::vector<std::string> result;
  for (const Entry& entry : tensors_) result.push_back(entry.name);
  return result;
}

void SafetensorsWriter::write(const std::string& path) const {
  Json header = Json::object();
  header["__metadata__"] = {{"format", "pt"}};
  size_t offset = 0;
  for (const Entry& entry : tensors_) {
    header[entry.name] = {{"dtype", dtype_name(entry.dtype)},
                          {"shape", entry.shape},
                          {"data_offsets", {offset, offset + entry.bytes.size()}}};
    offset += entry.bytes.size();
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create ", path);
  uint8_t length[8];
  uint64_t header_length = header_text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(header_length >> (8 * i));
  out.write(reinterpret_cast<const char*>(length), 8);
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  for (const Entry& entry : tensors_) {
    out.write(reinterpret_cast<const char*>(entry.bytes.data()),
              static_cast<std::streamsize>(entry.bytes.size()));
  }
  if (!out) fail("cannot write ", path);
}

}  // namespace longctx

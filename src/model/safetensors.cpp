#include "model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "common/json_util.h"
#include "longctx/error.h"

namespace longctx {
namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kBF16, "BF16", 2},   {DType::kF16, "F16", 2},   {DType::kF32, "F32", 4},
    {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E8M0, "F8_E8M0", 1}, {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},       {DType::kI32, "I32", 4},   {DType::kI64, "I64", 8},
    {DType::kBool, "BOOL", 1},
};

// a * b, or fails if it overflows.
uint64_t checked_multiply(uint64_t a, uint64_t b, const std::string& what) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) fail(what, ": size overflows");
  return a * b;
}

}  // namespace

const char* dtype_name(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry.name;
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry.size;
  }
  return 0;
}

bool parse_dtype(const std::string& name, DType* dtype) {
  for (const auto& entry : kDTypes) {
    if (name == entry.name) {
      *dtype = entry.dtype;
      return true;
    }
  }
  return false;
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

int64_t TensorInfo::num_elements() const {
  int64_t count = 1;
  for (const int64_t dim : shape) count *= dim;
  return count;
}

std::string TensorInfo::describe() const {
  return str_cat(dtype_name(dtype), " ", shape_to_string(shape));
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const auto bytes = file_.bytes();
  if (bytes.size() < 8) fail(path, ": truncated safetensors file (", bytes.size(), " bytes, no header)");
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[static_cast<size_t>(i)];
  if (header_length > kMaxSafetensorsHeaderBytes) {
    fail(path, ": header length ", header_length, " exceeds the limit of ",
         kMaxSafetensorsHeaderBytes, " bytes (corrupt file?)");
  }
  if (header_length > bytes.size() - 8) {
    fail(path, ": header length ", header_length, " runs past the end of the ", bytes.size(),
         "-byte file (truncated or corrupt)");
  }
  const std::string header_text(reinterpret_cast<const char*>(bytes.data() + 8), header_length);
  const Json header = parse_json(header_text, path + " header");
  if (!header.is_object()) fail(path, ": header is not a JSON object");

  const uint8_t* data_start = bytes.data() + 8 + header_length;
  const uint64_t data_size = bytes.size() - 8 - header_length;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, ": __metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (value.is_string()) metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = str_cat(path, ": tensor ", name);
    if (!entry.is_object()) fail(where, ": entry is not an object");
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) fail(where, ": missing dtype");
    TensorInfo info;
    info.name = name;
    info.file = path;
    const std::string dtype_text = entry["dtype"].get<std::string>();
    if (!parse_dtype(dtype_text, &info.dtype)) fail(where, ": unsupported dtype \"", dtype_text, "\"");
    if (!entry.contains("shape") || !entry["shape"].is_array()) fail(where, ": missing shape");
    uint64_t elements = 1;
    for (const Json& dim : entry["shape"]) {
      if (!dim.is_number_unsigned() && !(dim.is_number_integer() && dim.get<int64_t>() >= 0)) {
        fail(where, ": shape entries must be non-negative integers, found ", dim.dump());
      }
      const uint64_t extent = dim.get<uint64_t>();
      if (extent > (1ull << 40)) fail(where, ": shape extent ", extent, " is implausible");
      info.shape.push_back(static_cast<int64_t>(extent));
      elements = checked_multiply(elements, extent, where);
    }
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2 || !entry["data_offsets"][0].is_number_unsigned() ||
        !entry["data_offsets"][1].is_number_unsigned()) {
      fail(where, ": data_offsets must be two non-negative integers");
    }
    const uint64_t begin = entry["data_offsets"][0].get<uint64_t>();
    const uint64_t end = entry["data_offsets"][1].get<uint64_t>();
    if (begin > end) fail(where, ": data_offsets [", begin, ", ", end, "] are reversed");
    if (end > data_size) {
      fail(where, ": data ends at byte ", end, " but the file holds only ", data_size,
           " data bytes (truncated file?)");
    }
    const uint64_t expected = checked_multiply(elements, dtype_size(info.dtype), where);
    if (end - begin != expected) {
      fail(where, ": ", info.describe(), " needs ", expected, " bytes but data_offsets span ",
           end - begin);
    }
    info.data = data_start + begin;
    info.num_bytes = static_cast<size_t>(end - begin);
    tensors_.push_back(std::move(info));
  }

  // No two tensors may share bytes.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& info : tensors_) by_offset.push_back(&info);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->data < b->data; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& previous = *by_offset[i - 1];
    if (previous.data + previous.num_bytes > by_offset[i]->data) {
      fail(path, ": tensors ", previous.name, " and ", by_offset[i]->name, " overlap");
    }
  }
}

}  // namespace longctx

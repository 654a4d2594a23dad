#include "model/model_weights.h"

#include <cstring>
#include <set>

#include "common/float_formats.h"
#include "common/log.h"
#include "longctx/error.h"
#include "model/param_specs.h"
#include "model/weight_assembly.h"

namespace longctx {
namespace {

WeightFormat stored_linear_format(const Checkpoint& checkpoint, const ParamSpec& spec) {
  if (!spec.any_linear_format) return spec.format;
  const TensorInfo& weight = checkpoint.get(spec.name + ".weight");
  if (weight.dtype == DType::kBF16) return WeightFormat::kBF16;
  if (weight.dtype == DType::kF8E4M3) return WeightFormat::kFP8;
  fail("tensor ", spec.name, ".weight: expected BF16 or F8_E4M3 ",
       shape_to_string(spec.shape), ", found ", weight.describe());
}

// Checks that every parameter the config needs is stored with the released dtype and shape.
void validate_checkpoint(const Checkpoint& checkpoint, const std::vector<ParamSpec>& specs) {
  std::set<std::string> expected_names;
  for (const ParamSpec& spec : specs) {
    const WeightFormat format =
        spec.kind == ParamKind::kLinear ? stored_linear_format(checkpoint, spec) : spec.format;
    for (const StoredTensorSpec& tensor : stored_tensors(spec, format)) {
      expected_names.insert(tensor.name);
      const TensorInfo& found = checkpoint.get(tensor.name);
      const bool alternative_ok =
          (spec.kind == ParamKind::kApe && found.dtype == DType::kBF16) ||
          (spec.kind == ParamKind::kTid2eid && found.dtype == DType::kI32);
      if ((found.dtype != tensor.dtype && !alternative_ok) || found.shape != tensor.shape) {
        fail("tensor ", tensor.name, ": expected ", dtype_name(tensor.dtype), " ",
             shape_to_string(tensor.shape), ", found ", found.describe());
      }
    }
  }
  size_t extra = 0;
  for (const auto& [name, info] : checkpoint.tensors()) {
    if (!expected_names.count(name)) {
      if (extra < 5) log::warn(checkpoint.dir(), ": tensor ", name, " is not used by the model");
      ++extra;
    }
  }
  if (extra > 5) log::warn(checkpoint.dir(), ": ", extra, " tensors in all are not used by the model");
}

// The checkpoint as the source of the model's parameters: tensors bound in place (mmap), small
// vectors decoded to fp32, load progress reported per tensor.
class Binder final : public ParamSource {
 public:
  Binder(const Checkpoint& checkpoint, LoadProgressCallback progress, void* user)
      : checkpoint_(checkpoint), progress_callback_(progress), progress_user_(user) {
    progress_.tensors_total = checkpoint.tensors().size();
    progress_.bytes_total = checkpoint.total_bytes();
  }

  LinearWeight linear(const std::string& name, bool quantize_if_stored_quantized) override {
    const TensorInfo& weight = take(name + ".weight");
    LinearWeight linear;
    linear.name = name;
    linear.weight = weight.data;
    linear.out = weight.shape.at(0);
    linear.in = weight.shape.at(1);
    if (weight.dtype == DType::kBF16) {
      linear.format = WeightFormat::kBF16;
    } else if (weight.dtype == DType::kF8E4M3) {
      linear.format = WeightFormat::kFP8;
    } else if (weight.dtype == DType::kI8) {
      linear.format = WeightFormat::kFP4;
      linear.in *= 2;
    } else {
      fail("tensor ", name, ".weight: unsupported dtype ", dtype_name(weight.dtype));
    }
    if (linear.format != WeightFormat::kBF16) {
      linear.scale = take(name + ".scale").data;
      linear.quantize_activations = quantize_if_stored_quantized;
    }
    return linear;
  }

  std::vector<float> floats(const std::string& name) override {
    const TensorInfo& info = take(name);
    std::vector<float> values(static_cast<size_t>(info.num_elements()));
    if (info.dtype == DType::kF32) {
      std::memcpy(values.data(), info.data, info.num_bytes);
    } else if (info.dtype == DType::kBF16) {
      for (size_t i = 0; i < values.size(); ++i) {
        uint16_t bits;
        std::memcpy(&bits, info.data + 2 * i, 2);
        values[i] = bf16_to_float(bits);
      }
    } else {
      fail("tensor ", name, ": expected F32 or BF16, found ", info.describe());
    }
    return values;
  }

  std::vector<int32_t> expert_table(const std::string& name, int64_t num_experts) override {
    const TensorInfo& info = take(name);
    std::vector<int32_t> table(static_cast<size_t>(info.num_elements()));
    for (size_t i = 0; i < table.size(); ++i) {
      int64_t value = 0;
      if (info.dtype == DType::kI64) {
        std::memcpy(&value, info.data + 8 * i, 8);
      } else {
        int32_t narrow;
        std::memcpy(&narrow, info.data + 4 * i, 4);
        value = narrow;
      }
      if (value < 0 || value >= num_experts) {
        fail("tensor ", name, ": entry ", i, " routes to expert ", value, ", outside [0, ",
             num_experts, ")");
      }
      table[i] = static_cast<int32_t>(value);
    }
    return table;
  }

 private:
  const TensorInfo& take(const std::string& name) {
    const TensorInfo& info = checkpoint_.get(name);
    ++progress_.tensors_done;
    progress_.bytes_done += info.num_bytes;
    if (progress_callback_ != nullptr) progress_callback_(progress_, progress_user_);
    return info;
  }

  const Checkpoint& checkpoint_;
  LoadProgress progress_;
  LoadProgressCallback progress_callback_;
  void* progress_user_;
};

}  // namespace

void LinearWeight::decode_row(int64_t row, float* out_row) const {
  const size_t n = static_cast<size_t>(in);
  switch (format) {
    case WeightFormat::kBF16: {
      const uint8_t* bytes = weight + static_cast<size_t>(row) * n * 2;
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, bytes + 2 * i, 2);
        out_row[i] = bf16_to_float(bits);
      }
      return;
    }
    case WeightFormat::kFP8: {
      const float* fp8 = fp8_e4m3_table();
      const float* e8m0 = e8m0_table();
      const uint8_t* codes = weight + static_cast<size_t>(row) * n;
      const size_t scale_cols = (n + 127) / 128;
      const uint8_t* scales = scale + static_cast<size_t>(row / 128) * scale_cols;
      for (size_t i = 0; i < n; ++i) out_row[i] = fp8[codes[i]] * e8m0[scales[i / 128]];
      return;
    }
    case WeightFormat::kFP4: {
      const float* fp4 = fp4_e2m1_table();
      const float* e8m0 = e8m0_table();
      const uint8_t* packed = weight + static_cast<size_t>(row) * (n / 2);
      const uint8_t* scales = scale + static_cast<size_t>(row) * (n / 32);
      for (size_t i = 0; i < n; i += 2) {
        const float block_scale = e8m0[scales[i / 32]];
        out_row[i] = fp4[packed[i / 2] & 0xf] * block_scale;
        out_row[i + 1] = fp4[packed[i / 2] >> 4] * block_scale;
      }
      return;
    }
  }
}

size_t LinearWeight::stored_bytes() const {
  const size_t o = static_cast<size_t>(out);
  const size_t i = static_cast<size_t>(in);
  switch (format) {
    case WeightFormat::kBF16: return o * i * 2;
    case WeightFormat::kFP8: return o * i + ((o + 127) / 128) * ((i + 127) / 128);
    case WeightFormat::kFP4: return o * i / 2 + o * (i / 32);
  }
  return 0;
}

LoadedModel::LoadedModel(const std::string& dir, LoadProgressCallback progress,
                         void* progress_user)
    : checkpoint_(std::make_unique<Checkpoint>(dir)) {
  const ModelConfig& config = checkpoint_->config();
  validate_checkpoint(*checkpoint_, model_param_specs(config));
  Binder bind(*checkpoint_, progress, progress_user);
  weights_ = assemble_model_weights(config, bind);
}

}  // namespace longctx

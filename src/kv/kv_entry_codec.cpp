#include "kv/kv_entry_codec.h"

#include <cstring>
#include <vector>

#include "common/block_quant.h"
#include "common/float_formats.h"

namespace longctx {
namespace {

void encode_bf16(const float* values, size_t n, uint8_t* bytes) {
  for (size_t i = 0; i < n; ++i) {
    const uint16_t bits = float_to_bf16(values[i]);
    std::memcpy(bytes + 2 * i, &bits, 2);
  }
}

void decode_bf16(const uint8_t* bytes, size_t n, float* values) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, bytes + 2 * i, 2);
    values[i] = bf16_to_float(bits);
  }
}

}  // namespace

void KvEntryCodec::encode(const float* values, uint8_t* bytes) const {
  const size_t d = static_cast<size_t>(head_dim);
  switch (dtype) {
    case KvDtype::kF32: std::memcpy(bytes, values, d * 4); return;
    case KvDtype::kBF16: encode_bf16(values, d, bytes); return;
    case KvDtype::kFP8: {
      const size_t nope = d - static_cast<size_t>(rope_dim);
      fp8_quantize_blocks(values, nope, 64, bytes, bytes + nope + 2 * static_cast<size_t>(rope_dim));
      encode_bf16(values + nope, static_cast<size_t>(rope_dim), bytes + nope);
      return;
    }
  }
}

void KvEntryCodec::decode(const uint8_t* bytes, float* values) const {
  const size_t d = static_cast<size_t>(head_dim);
  switch (dtype) {
    case KvDtype::kF32: std::memcpy(values, bytes, d * 4); return;
    case KvDtype::kBF16: decode_bf16(bytes, d, values); return;
    case KvDtype::kFP8: {
      const size_t nope = d - static_cast<size_t>(rope_dim);
      const uint8_t* scales = bytes + nope + 2 * static_cast<size_t>(rope_dim);
      const float* fp8 = fp8_e4m3_table();
      const float* e8m0 = e8m0_table();
      for (size_t i = 0; i < nope; ++i) values[i] = fp8[bytes[i]] * e8m0[scales[i / 64]];
      decode_bf16(bytes + nope, static_cast<size_t>(rope_dim), values + nope);
      return;
    }
  }
}

void KvEntryCodec::round_trip(float* values) const {
  if (dtype == KvDtype::kF32) return;
  std::vector<uint8_t> bytes(kv_entry_bytes(dtype, head_dim, rope_dim));
  encode(values, bytes.data());
  decode(bytes.data(), values);
}

void IndexerKeyCodec::encode(const float* values, uint8_t* bytes) const {
  const size_t d = static_cast<size_t>(head_dim);
  switch (dtype) {
    case IndexerKeyDtype::kF32: std::memcpy(bytes, values, d * 4); return;
    case IndexerKeyDtype::kBF16: encode_bf16(values, d, bytes); return;
    case IndexerKeyDtype::kFP4: fp4_quantize_blocks(values, d, 32, bytes, bytes + d / 2); return;
  }
}

void IndexerKeyCodec::decode(const uint8_t* bytes, float* values) const {
  const size_t d = static_cast<size_t>(head_dim);
  switch (dtype) {
    case IndexerKeyDtype::kF32: std::memcpy(values, bytes, d * 4); return;
    case IndexerKeyDtype::kBF16: decode_bf16(bytes, d, values); return;
    case IndexerKeyDtype::kFP4: {
      const uint8_t* scales = bytes + d / 2;
      const float* fp4 = fp4_e2m1_table();
      const float* e8m0 = e8m0_table();
      for (size_t i = 0; i < d; i += 2) {
        const float scale = e8m0[scales[i / 32]];
        values[i] = fp4[bytes[i / 2] & 0xf] * scale;
        values[i + 1] = fp4[bytes[i / 2] >> 4] * scale;
      }
      return;
    }
  }
}

void IndexerKeyCodec::round_trip(float* values) const {
  if (dtype == IndexerKeyDtype::kF32) return;
  std::vector<uint8_t> bytes(indexer_key_bytes(dtype, head_dim));
  encode(values, bytes.data());
  decode(bytes.data(), values);
}

}  // namespace longctx

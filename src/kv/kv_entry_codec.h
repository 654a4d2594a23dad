// Encoding of single KV-cache vectors in their storage dtype. Backends read keys only through
// decode, and use round_trip on freshly computed vectors so that a key has the same value
// whether it is read from the cache or from the chunk being prefilled.
#pragma once

#include <cstdint>

#include "kv/kv_layout.h"

namespace longctx {

struct KvEntryCodec {
  KvDtype dtype = KvDtype::kF32;
  int64_t head_dim = 0;
  int64_t rope_dim = 0;

  void encode(const float* values, uint8_t* bytes) const;
  void decode(const uint8_t* bytes, float* values) const;
  void round_trip(float* values) const;
};

struct IndexerKeyCodec {
  IndexerKeyDtype dtype = IndexerKeyDtype::kF32;
  int64_t head_dim = 0;

  void encode(const float* values, uint8_t* bytes) const;
  void decode(const uint8_t* bytes, float* values) const;
  void round_trip(float* values) const;
};

}  // namespace longctx

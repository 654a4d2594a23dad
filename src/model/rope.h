// Rotary position embedding tables of V4. Window-only layers use rope_theta without YaRN;
// layers with a compressor use compress_rope_theta with YaRN scaling. The rotary part is the
// last qk_rope_head_dim dims of a vector, taken as interleaved pairs (2i, 2i+1).
#pragma once

#include <cstdint>
#include <vector>

#include "longctx/model_config.h"

namespace longctx {

class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(int64_t rope_dim, double theta, const YarnScaling& yarn);

  // The table of a layer with compress ratio `ratio`.
  static RopeTable for_layer(const ModelConfig& config, int ratio);

  int64_t rope_dim() const { return rope_dim_; }
  const std::vector<float>& inverse_frequencies() const { return inv_freq_; }

  // cos and sin of the angles of position `pos`, rope_dim / 2 each. The angle is
  // float(pos) * freq in fp32, as the reference forms it.
  void angles(int64_t pos, float* cos_out, float* sin_out) const;
  // Rotates the rope_dim values at x by position `pos` (inverse: by -pos).
  void rotate(float* x, int64_t pos, bool inverse) const;

 private:
  int64_t rope_dim_ = 0;
  std::vector<float> inv_freq_;
};

}  // namespace longctx

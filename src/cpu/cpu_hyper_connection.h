// Hyper-connections on the CPU: the hc_mult residual streams of each token are mixed into one
// sublayer input (pre), and the sublayer output is mixed back into new streams (post, comb).
#pragma once

#include <cstdint>

#include "longctx/model_config.h"
#include "model/model_weights.h"

namespace longctx::cpu {

// streams [rows, hc, D] -> y [rows, D], post [rows, hc], comb [rows, hc, hc].
void hc_pre(const HyperConnectionWeights& w, const ModelConfig& config, const float* streams,
            int64_t rows, float* y, float* post, float* comb);

// streams [rows, hc, D] <- post * sublayer_out + comb^T streams.
void hc_post(const ModelConfig& config, const float* sublayer_out, const float* post,
             const float* comb, int64_t rows, float* streams);

// The final merge of the streams before the output norm: y [rows, D].
void hc_head(const HyperConnectionWeights& w, const ModelConfig& config, const float* streams,
             int64_t rows, float* y);

}  // namespace longctx::cpu

// The request fields that chat completions and completions share: sampling parameters, stop
// conditions, n, seed, streaming options. Used by the two request parsers.
#pragma once

#include <string>

#include "server/json_fields.h"
#include "server/openai_request.h"

namespace longctx::server {

// Reads temperature, top_p, top_k, min_p, the penalties, seed, n, stop, stop_token_ids,
// ignore_eos, min_tokens, skip_special_tokens and rejects logit_bias (not supported).
void read_sampling_fields(const FieldReader& fields, SamplingParams* sampling);

// stream, stream_options.include_usage (only allowed with stream, as in OpenAI's API).
void read_stream_fields(const FieldReader& fields, InferenceRequest* request);

// Checks the prompt length against the context and the sampling parameters as the engine will
// (SamplingParams::validate), naming the field at fault. `prompt_field` is "messages" or
// "prompt".
void check_generation(const InferenceRequest& request, const ModelLimits& limits,
                      const std::string& prompt_field);

}  // namespace longctx::server

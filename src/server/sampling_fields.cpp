#include "server/sampling_fields.h"

#include <array>

namespace longctx::server {
namespace {

// SamplingParams::validate starts its messages with the field's name; the names it may report.
constexpr std::array<std::string_view, 13> kValidatedFields = {"temperature",
                                                               "top_p",
                                                               "top_k",
                                                               "min_p",
                                                               "repetition_penalty",
                                                               "presence_penalty",
                                                               "frequency_penalty",
                                                               "max_tokens",
                                                               "min_tokens",
                                                               "stop_token_ids",
                                                               "stop",
                                                               "logprobs",
                                                               "n"};

std::string field_named_by(const std::string& message) {
  if (message.find("plus max_tokens") != std::string::npos) return "max_tokens";
  const std::string first = message.substr(0, message.find(' '));
  for (const std::string_view field : kValidatedFields) {
    if (first == field) return first;
  }
  if (message.rfind("stop strings", 0) == 0 || message.rfind("at most 16 stop", 0) == 0)
    return "stop";
  return "";
}

}  // namespace

void read_sampling_fields(const FieldReader& fields, SamplingParams* sampling) {
  if (auto value = fields.number("temperature")) sampling->temperature = *value;
  if (auto value = fields.number("top_p")) sampling->top_p = *value;
  if (auto value = fields.integer("top_k")) sampling->top_k = *value;
  if (auto value = fields.number("min_p")) sampling->min_p = *value;
  if (auto value = fields.number("presence_penalty")) sampling->presence_penalty = *value;
  if (auto value = fields.number("frequency_penalty")) sampling->frequency_penalty = *value;
  if (auto value = fields.number("repetition_penalty")) sampling->repetition_penalty = *value;
  if (auto value = fields.integer("seed")) sampling->seed = static_cast<uint64_t>(*value);
  if (auto value = fields.integer("n")) sampling->n = *value;
  if (auto value = fields.boolean("ignore_eos")) sampling->ignore_eos = *value;
  if (auto value = fields.integer("min_tokens")) sampling->min_tokens = *value;
  if (auto value = fields.boolean("skip_special_tokens")) sampling->skip_special_tokens = *value;

  if (const OrderedJson* stop = fields.find("stop")) {
    if (stop->is_string()) {
      sampling->stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) {
          throw invalid_field(
              "stop", str_cat("stop[", i, "] must be a string, found ", json_type_name((*stop)[i])));
        }
        sampling->stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      fields.wrong_type("stop", "a string or an array of strings");
    }
  }
  if (const OrderedJson* ids = fields.array("stop_token_ids")) {
    for (size_t i = 0; i < ids->size(); ++i) {
      const OrderedJson& id = (*ids)[i];
      if (!id.is_number_integer()) {
        throw invalid_field(
            "stop_token_ids",
            str_cat("stop_token_ids[", i, "] must be an integer, found ", json_type_name(id)));
      }
      const int64_t value = id.get<int64_t>();
      if (value < 0 || value > INT32_MAX) {
        throw invalid_field("stop_token_ids",
                            str_cat("stop_token_ids[", i, "] is not a token id: ", value));
      }
      sampling->stop_token_ids.push_back(static_cast<int32_t>(value));
    }
  }
  if (const OrderedJson* bias = fields.find("logit_bias")) {
    if (!bias->is_object()) fields.wrong_type("logit_bias", "an object");
    if (!bias->empty())
      throw invalid_field("logit_bias", "logit_bias is not supported by this server");
  }
}

void read_stream_fields(const FieldReader& fields, InferenceRequest* request) {
  request->stream = fields.boolean("stream").value_or(false);
  if (const OrderedJson* options = fields.object("stream_options")) {
    if (!request->stream) {
      throw invalid_field("stream_options", "stream_options is only allowed when stream is true");
    }
    const FieldReader stream_options(*options, "stream_options.");
    request->include_usage = stream_options.boolean("include_usage").value_or(false);
    // continuous_usage_stats (vLLM) is accepted and ignored: usage comes once, at the end.
    stream_options.boolean("continuous_usage_stats");
  }
}

void check_generation(const InferenceRequest& request, const ModelLimits& limits,
                      const std::string& prompt_field) {
  const int64_t prompt_tokens = static_cast<int64_t>(request.generation.prompt.size());
  if (prompt_tokens == 0)
    throw invalid_field(prompt_field, str_cat(prompt_field, " gives an empty prompt"));
  if (prompt_tokens >= limits.max_model_len) {
    throw invalid_field(prompt_field,
                        str_cat("the prompt is ", prompt_tokens,
                                " tokens long; this model's maximum context length is ",
                                limits.max_model_len, " tokens"));
  }
  try {
    request.generation.sampling.validate(prompt_tokens, limits.max_model_len, limits.vocab_size);
  } catch (const Error& error) {
    throw invalid_field(field_named_by(error.what()), error.what());
  }
}

}  // namespace longctx::server

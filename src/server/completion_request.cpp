// POST /v1/completions request bodies -> InferenceRequest.
#include "server/openai_request.h"
#include "server/sampling_fields.h"
#include "text/tokenizer.h"

namespace longctx::server {
namespace {

std::vector<int32_t> token_ids(const OrderedJson& array, const std::string& where,
                               int64_t vocab_size) {
  std::vector<int32_t> ids;
  ids.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const OrderedJson& id = array[i];
    if (!id.is_number_integer()) {
      throw invalid_field("prompt", str_cat(where, "[", i, "] must be a token id (integer), found ",
                                            json_type_name(id)));
    }
    const int64_t value = id.get<int64_t>();
    if (value < 0 || value >= vocab_size) {
      throw invalid_field("prompt", str_cat(where, "[", i, "] = ", value,
                                            " is outside the vocabulary [0, ", vocab_size, ")"));
    }
    ids.push_back(static_cast<int32_t>(value));
  }
  return ids;
}

// The prompt as text (string prompts) or token ids. One prompt per request: a batch of
// prompts is refused rather than half-supported.
struct Prompt {
  std::optional<std::string> text;
  std::vector<int32_t> ids;
};

Prompt read_prompt(const FieldReader& fields, int64_t vocab_size) {
  const OrderedJson* prompt = fields.find("prompt");
  if (!prompt)
    throw invalid_field("prompt", "prompt is required: a string or an array of token ids");
  if (prompt->is_string()) return {prompt->get<std::string>(), {}};
  if (!prompt->is_array()) fields.wrong_type("prompt", "a string or an array of token ids");
  if (prompt->empty()) throw invalid_field("prompt", "prompt must not be empty");
  const OrderedJson& first = (*prompt)[0];
  if (first.is_number()) return {std::nullopt, token_ids(*prompt, "prompt", vocab_size)};
  if (prompt->size() > 1) {
    throw invalid_field("prompt", str_cat("prompt holds ", prompt->size(),
                                          " prompts; this server takes one prompt per request"));
  }
  if (first.is_string()) return {first.get<std::string>(), {}};
  if (first.is_array()) return {std::nullopt, token_ids(first, "prompt[0]", vocab_size)};
  throw invalid_field(
      "prompt",
      str_cat("prompt[0] must be a string or an array of token ids, found ", json_type_name(first)));
}

}  // namespace

InferenceRequest parse_completion_request(const OrderedJson& body, const ModelLimits& limits) {
  const FieldReader fields(body);
  InferenceRequest request;
  request.kind = ApiKind::kCompletion;
  request.model = requested_model(body);

  const Prompt prompt = read_prompt(fields, limits.vocab_size);
  if (prompt.text) {
    if (!limits.tokenizer)
      throw invalid_field("prompt", "the served model has no tokenizer: send token ids");
    std::string text = *prompt.text;
    if (text.empty()) throw invalid_field("prompt", "prompt must not be empty");
    // Like a Hugging Face tokenizer with add_special_tokens (vLLM's default), the prompt starts
    // with BOS unless it already does or the client turned it off.
    const bool add_bos =
        fields.boolean("add_special_tokens").value_or(true) && limits.tokenizer->bos_id() >= 0;
    request.generation.prompt = limits.tokenizer->encode(text, /*allow_special=*/true);
    if (add_bos && (request.generation.prompt.empty() ||
                    request.generation.prompt[0] != limits.tokenizer->bos_id())) {
      request.generation.prompt.insert(request.generation.prompt.begin(),
                                       limits.tokenizer->bos_id());
    }
    request.echo_text = text;
  } else {
    request.generation.prompt = prompt.ids;
    if (limits.tokenizer) request.echo_text = limits.tokenizer->decode(prompt.ids);
  }

  if (auto suffix = fields.string("suffix"); suffix && !suffix->empty()) {
    throw invalid_field("suffix", "suffix is not supported by this model");
  }
  const bool echo = fields.boolean("echo").value_or(false);
  if (!echo) request.echo_text.clear();
  if (echo && !limits.tokenizer)
    throw invalid_field("echo", "echo needs a tokenizer; the served model has none");

  SamplingParams& sampling = request.generation.sampling;
  read_sampling_fields(fields, &sampling);
  read_stream_fields(fields, &request);
  sampling.max_tokens = fields.integer("max_tokens").value_or(16);
  if (sampling.max_tokens < 1) {
    throw invalid_field("max_tokens",
                        str_cat("max_tokens must be at least 1, got ", sampling.max_tokens));
  }
  if (const auto logprobs = fields.integer("logprobs")) {
    if (*logprobs < 0 || *logprobs > 20) {
      throw invalid_field("logprobs",
                          str_cat("logprobs must be between 0 and 20, got ", *logprobs));
    }
    if (echo)
      throw invalid_field(
          "logprobs",
          "logprobs with echo would need prompt logprobs, which this server does not compute");
    request.logprobs = true;
    sampling.logprobs = *logprobs;
  }
  if (const auto best_of = fields.integer("best_of"); best_of && *best_of != sampling.n) {
    throw invalid_field("best_of",
                        str_cat("best_of must equal n (", sampling.n, "), got ", *best_of));
  }
  fields.string("user");
  check_generation(request, limits, "prompt");
  return request;
}

}  // namespace longctx::server

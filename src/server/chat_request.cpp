// POST /v1/chat/completions request bodies -> InferenceRequest.
#include <algorithm>

#include "server/openai_request.h"
#include "server/sampling_fields.h"
#include "text/chat_encoding.h"
#include "text/tokenizer.h"

namespace longctx::server {
namespace {

// Thinking mode from `thinking` (true/false or {"type": "enabled" | "disabled"}) or
// chat_template_kwargs.thinking / enable_thinking, the switches vLLM users send. Chat mode
// (no reasoning) unless asked.
bool thinking_requested(const FieldReader& fields) {
  if (const OrderedJson* thinking = fields.find("thinking")) {
    if (thinking->is_boolean()) return thinking->get<bool>();
    if (thinking->is_object()) {
      const FieldReader object(*thinking, "thinking.");
      const std::string type = object.string("type").value_or("enabled");
      if (type == "enabled") return true;
      if (type == "disabled") return false;
      throw invalid_field("thinking.type",
                          str_cat("thinking.type must be enabled or disabled, found '", type, "'"));
    }
    fields.wrong_type("thinking", "a boolean or {\"type\": \"enabled\" | \"disabled\"}");
  }
  if (const OrderedJson* kwargs = fields.object("chat_template_kwargs")) {
    const FieldReader object(*kwargs, "chat_template_kwargs.");
    if (auto value = object.boolean("thinking")) return *value;
    if (auto value = object.boolean("enable_thinking")) return *value;
  }
  return false;
}

// The tools array after checking its shape against tool_choice; empty when the prompt should
// not offer tools (none given, or tool_choice "none").
OrderedJson read_tools(const FieldReader& fields) {
  const OrderedJson* tools = fields.array("tools");
  std::vector<std::string> names;
  if (tools) {
    for (size_t i = 0; i < tools->size(); ++i) {
      const std::string where = str_cat("tools[", i, "]");
      const OrderedJson& tool = (*tools)[i];
      if (!tool.is_object())
        throw invalid_field("tools", str_cat(where, " must be an object, found ", json_type_name(tool)));
      const FieldReader tool_fields(tool, where + ".");
      const std::string type = tool_fields.string("type").value_or("function");
      if (type != "function") {
        throw invalid_field("tools",
                            str_cat(where, ".type must be \"function\", found '", type, "'"));
      }
      const OrderedJson* function = tool_fields.object("function");
      if (!function) throw invalid_field("tools", str_cat(where, ".function is required"));
      const FieldReader function_fields(*function, where + ".function.");
      const auto name = function_fields.string("name");
      if (!name || name->empty())
        throw invalid_field("tools", str_cat(where, ".function.name must be a non-empty string"));
      function_fields.string("description");
      function_fields.object("parameters");
      names.push_back(*name);
    }
  }
  const OrderedJson* choice = fields.find("tool_choice");
  bool offer_tools = tools && !tools->empty();
  if (choice) {
    if (choice->is_string()) {
      const std::string mode = choice->get<std::string>();
      if (mode != "none" && mode != "auto" && mode != "required") {
        throw invalid_field(
            "tool_choice",
            str_cat("tool_choice must be none, auto, required or a function, found '", mode, "'"));
      }
      if (mode != "none" && !offer_tools) {
        throw invalid_field("tool_choice",
                            str_cat("tool_choice '", mode, "' needs a non-empty tools array"));
      }
      if (mode == "none") offer_tools = false;
    } else if (choice->is_object()) {
      const FieldReader choice_fields(*choice, "tool_choice.");
      const OrderedJson* function = choice_fields.object("function");
      const auto name =
          function ? FieldReader(*function, "tool_choice.function.").string("name") : std::nullopt;
      if (!name)
        throw invalid_field(
            "tool_choice",
            "tool_choice needs {\"type\": \"function\", \"function\": {\"name\": ...}}");
      if (std::find(names.begin(), names.end(), *name) == names.end()) {
        throw invalid_field("tool_choice", str_cat("tool_choice names function '", *name,
                                                   "', which is not in tools"));
      }
    } else {
      fields.wrong_type("tool_choice", "a string or an object");
    }
  }
  // tool_choice required / a named function is a request the model sees through its prompt;
  // the output is not constrained to it.
  return offer_tools ? *tools : OrderedJson::array();
}

// The messages with a request-level response_format attached to the leading system message,
// where V4's encoding renders it (a new empty system message when there is none).
OrderedJson with_response_format(const OrderedJson& messages, const FieldReader& fields) {
  const OrderedJson* format = fields.object("response_format");
  if (!format) return messages;
  const FieldReader format_fields(*format, "response_format.");
  const auto type = format_fields.string("type");
  if (!type) throw invalid_field("response_format.type", "response_format.type is required");
  if (*type == "text") return messages;
  if (*type == "json_schema") {
    const OrderedJson* schema = format_fields.object("json_schema");
    if (!schema)
      throw invalid_field("response_format.json_schema",
                          "response_format.json_schema is required for type json_schema");
    const auto name = FieldReader(*schema, "response_format.json_schema.").string("name");
    if (!name)
      throw invalid_field("response_format.json_schema.name",
                          "response_format.json_schema.name is required");
  } else if (*type != "json_object") {
    throw invalid_field(
        "response_format.type",
        str_cat("response_format.type must be text, json_object or json_schema, found '", *type,
                "'"));
  }
  OrderedJson result = messages;
  const bool leading_system =
      result[0].is_object() && result[0].value("role", OrderedJson()) == "system";
  if (!leading_system) {
    result.insert(result.begin(), OrderedJson{{"role", "system"}, {"content", ""}});
  }
  result[0]["response_format"] = *format;
  return result;
}

}  // namespace

std::string requested_model(const OrderedJson& body) {
  return FieldReader(body).string("model").value_or("");
}

ChatPrompt render_chat_prompt(const OrderedJson& body) {
  const FieldReader fields(body);
  const OrderedJson* messages = fields.array("messages");
  if (!messages) throw invalid_field("messages", "messages is required: an array of chat messages");
  if (messages->empty()) throw invalid_field("messages", "messages must not be empty");

  ChatPrompt prompt;
  text::ChatOptions options;
  prompt.thinking = thinking_requested(fields);
  options.thinking_mode =
      prompt.thinking ? text::ThinkingMode::kThinking : text::ThinkingMode::kChat;
  if (auto effort = fields.string("reasoning_effort")) {
    try {
      options.reasoning_effort = text::parse_reasoning_effort(*effort);
    } catch (const Error& error) {
      throw invalid_field("reasoning_effort", error.what());
    }
  }
  options.add_generation_prompt = fields.boolean("add_generation_prompt").value_or(true);
  const OrderedJson tools = read_tools(fields);
  const OrderedJson conversation = with_response_format(*messages, fields);
  try {
    prompt.text = text::encode_chat(conversation, tools, options);
  } catch (const Error& error) {
    throw invalid_field("messages", error.what());
  }
  return prompt;
}

InferenceRequest parse_chat_request(const OrderedJson& body, const ModelLimits& limits) {
  const FieldReader fields(body);
  InferenceRequest request;
  request.kind = ApiKind::kChatCompletion;
  request.model = requested_model(body);
  if (!limits.tokenizer) {
    throw invalid_request(
        "chat completions need a tokenizer and the served model has none; "
        "use /v1/completions with token ids");
  }
  const ChatPrompt prompt = render_chat_prompt(body);
  request.thinking = prompt.thinking;
  request.generation.prompt = limits.tokenizer->encode(prompt.text, /*allow_special=*/true);

  SamplingParams& sampling = request.generation.sampling;
  read_sampling_fields(fields, &sampling);
  read_stream_fields(fields, &request);
  // max_completion_tokens replaced max_tokens in OpenAI's API; without either the completion
  // may fill the context.
  const auto max_tokens = fields.has("max_completion_tokens")
                              ? fields.integer("max_completion_tokens")
                              : fields.integer("max_tokens");
  const int64_t prompt_tokens = static_cast<int64_t>(request.generation.prompt.size());
  sampling.max_tokens =
      max_tokens.value_or(std::max<int64_t>(1, limits.max_model_len - prompt_tokens));
  if (max_tokens && *max_tokens < 1) {
    const std::string name =
        fields.has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    throw invalid_field(name, str_cat(name, " must be at least 1, got ", *max_tokens));
  }

  request.logprobs = fields.boolean("logprobs").value_or(false);
  const auto top_logprobs = fields.integer("top_logprobs");
  if (top_logprobs) {
    if (!request.logprobs) throw invalid_field("top_logprobs", "top_logprobs needs logprobs: true");
    if (*top_logprobs < 0 || *top_logprobs > 20) {
      throw invalid_field("top_logprobs",
                          str_cat("top_logprobs must be between 0 and 20, got ", *top_logprobs));
    }
  }
  sampling.logprobs = request.logprobs ? top_logprobs.value_or(0) : -1;
  fields.boolean("parallel_tool_calls");
  fields.string("user");
  check_generation(request, limits, "messages");
  return request;
}

}  // namespace longctx::server

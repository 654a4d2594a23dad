#include "text/chat_encoding.h"

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include "longctx/error.h"
#include "text/special_tokens.h"

namespace longctx::text {
namespace {

// The prompt texts of the V4 format; the official encoder's outputs must match byte for byte.
constexpr std::string_view kReasoningEffortMax =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n";

constexpr std::string_view kResponseFormatHeader =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

// The tools section, with "@DSML@" standing for the DSML marker and "@SCHEMAS@" for the tool
// schemas, one JSON object per line.
constexpr std::string_view kToolsTemplate =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools "
    "by writing a \"<@DSML@tool_calls>\" block like the following:\n\n"
    "<@DSML@tool_calls>\n"
    "<@DSML@invoke name=\"$TOOL_NAME\">\n"
    "<@DSML@parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</"
    "@DSML@parameter>\n"
    "...\n"
    "</@DSML@invoke>\n"
    "<@DSML@invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</@DSML@invoke>\n"
    "</@DSML@tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning "
    "inside <think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n"
    "@SCHEMAS@\n\n"
    "You MUST strictly follow the above defined tool name and parameter schemas to invoke tool "
    "calls.\n";

const std::map<std::string, std::string_view, std::less<>>& task_tokens() {
  static const std::map<std::string, std::string_view, std::less<>> tokens = {
      {"action", tokens::kTaskAction},       {"query", tokens::kTaskQuery},
      {"authority", tokens::kTaskAuthority}, {"domain", tokens::kTaskDomain},
      {"title", tokens::kTaskTitle},         {"read_url", tokens::kTaskReadUrl}};
  return tokens;
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// Python truthiness, for the fields the official encoder tests with `if value:`.
bool truthy(const OrderedJson* value) {
  if (value == nullptr || value->is_null()) return false;
  if (value->is_boolean()) return value->get<bool>();
  // nlohmann's empty() is false for every string, so strings are checked by their text.
  if (value->is_string()) return !value->get_ref<const std::string&>().empty();
  if (value->is_array() || value->is_object()) return !value->empty();
  if (value->is_number_float()) return value->get<double>() != 0.0;
  if (value->is_number()) return value->get<int64_t>() != 0;
  return true;
}

const OrderedJson* field(const OrderedJson& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// Text of a content field. Beyond the official encoder (which needs a string): null -> "",
// an array of OpenAI content parts -> its text parts joined by "\n\n" (other parts become
// "[Unsupported <type>]", the official wording for tool results), other JSON -> its text.
std::string content_text(const OrderedJson* content) {
  if (content == nullptr || content->is_null()) return "";
  if (content->is_string()) return content->get<std::string>();
  if (content->is_array()) {
    std::string out;
    bool first = true;
    for (const OrderedJson& part : *content) {
      if (!first) out.append("\n\n");
      first = false;
      const OrderedJson* type = part.is_object() ? field(part, "type") : nullptr;
      if (type != nullptr && type->is_string() && type->get<std::string>() == "text") {
        out.append(content_text(field(part, "text")));
      } else if (part.is_string()) {
        out.append(part.get<std::string>());
      } else {
        out.append("[Unsupported ");
        out.append(type != nullptr && type->is_string() ? type->get<std::string>() : "None");
        out.append("]");
      }
    }
    return out;
  }
  return python_json_dumps(*content);
}

struct ToolCall {
  std::string id;
  std::string name;
  OrderedJson arguments;  // as given: usually a JSON string
};

struct Block {
  bool tool_result = false;
  std::string text;
  std::string tool_use_id;
};

// One message after the official preprocessing (tool messages merged into user turns).
struct Message {
  std::string role;
  std::string content;
  bool content_truthy = false;
  bool has_blocks = false;  // user turns: rendered from `blocks`
  std::vector<Block> blocks;
  const OrderedJson* tools = nullptr;  // non-empty array, system / developer only
  const OrderedJson* response_format = nullptr;
  std::vector<ToolCall> tool_calls;
  std::string reasoning_content;
  bool wo_eos = false;
  std::optional<std::string> task;
};

std::string message_label(size_t index) {
  return str_cat("messages[", index, "]");
}

std::optional<std::string> parse_task(const OrderedJson& message, size_t index) {
  const OrderedJson* task = field(message, "task");
  if (task == nullptr || task->is_null()) return std::nullopt;
  if (!task->is_string()) fail(message_label(index), ".task must be a string");
  return task->get<std::string>();
}

std::vector<ToolCall> parse_tool_calls(const OrderedJson* tool_calls, size_t index) {
  std::vector<ToolCall> calls;
  if (!truthy(tool_calls)) return calls;
  if (!tool_calls->is_array()) fail(message_label(index), ".tool_calls must be an array");
  for (size_t i = 0; i < tool_calls->size(); ++i) {
    const OrderedJson& call = (*tool_calls)[i];
    const std::string where = str_cat(message_label(index), ".tool_calls[", i, "]");
    const OrderedJson* function = call.is_object() ? field(call, "function") : nullptr;
    if (function == nullptr || !function->is_object()) {
      fail(where, " needs a \"function\" object");
    }
    const OrderedJson* name = field(*function, "name");
    if (name == nullptr || !name->is_string()) fail(where, ".function needs a string \"name\"");
    ToolCall parsed;
    parsed.name = name->get<std::string>();
    if (const OrderedJson* arguments = field(*function, "arguments")) parsed.arguments = *arguments;
    const OrderedJson* id = field(call, "id");
    if (!truthy(id)) id = field(*function, "id");
    if (id != nullptr && id->is_string()) parsed.id = id->get<std::string>();
    calls.push_back(std::move(parsed));
  }
  return calls;
}

// merge_tool_messages of the official encoder.
std::vector<Message> merge_tool_messages(const OrderedJson& messages) {
  if (!messages.is_array()) fail("messages must be an array, found ", messages.type_name());
  std::vector<Message> merged;
  for (size_t index = 0; index < messages.size(); ++index) {
    const OrderedJson& raw = messages[index];
    if (!raw.is_object()) fail(message_label(index), " must be an object");
    const OrderedJson* role = field(raw, "role");
    if (role == nullptr || !role->is_string()) {
      fail(message_label(index), " needs a string \"role\"");
    }
    const std::string role_name = role->get<std::string>();
    const OrderedJson* content = field(raw, "content");

    if (role_name == "tool") {
      Block block;
      block.tool_result = true;
      block.text = content_text(content);
      const OrderedJson* id = field(raw, "tool_call_id");
      if (id != nullptr && id->is_string()) block.tool_use_id = id->get<std::string>();
      if (!merged.empty() && merged.back().role == "user" && merged.back().has_blocks) {
        merged.back().blocks.push_back(std::move(block));
      } else {
        Message message;
        message.role = "user";
        message.has_blocks = true;
        message.blocks.push_back(std::move(block));
        merged.push_back(std::move(message));
      }
      continue;
    }
    if (role_name == "user") {
      Block block;
      block.text = content_text(content);
      if (!merged.empty() && merged.back().role == "user" && merged.back().has_blocks &&
          !merged.back().task) {
        merged.back().blocks.push_back(std::move(block));
        continue;
      }
      Message message;
      message.role = "user";
      message.content = block.text;
      message.content_truthy = !block.text.empty();
      message.has_blocks = true;
      message.blocks.push_back(std::move(block));
      message.task = parse_task(raw, index);
      const OrderedJson* wo_eos = field(raw, "wo_eos");
      message.wo_eos = truthy(wo_eos);
      merged.push_back(std::move(message));
      continue;
    }

    Message message;
    message.role = role_name;
    message.content = content_text(content);
    message.content_truthy = truthy(content);
    if (const OrderedJson* tools = field(raw, "tools"); truthy(tools)) {
      if (!tools->is_array()) fail(message_label(index), ".tools must be an array");
      message.tools = tools;
    }
    if (const OrderedJson* format = field(raw, "response_format"); truthy(format)) {
      message.response_format = format;
    }
    message.tool_calls = parse_tool_calls(field(raw, "tool_calls"), index);
    message.reasoning_content = content_text(field(raw, "reasoning_content"));
    message.wo_eos = truthy(field(raw, "wo_eos"));
    message.task = parse_task(raw, index);
    merged.push_back(std::move(message));
  }
  return merged;
}

// sort_tool_results_by_call_order of the official encoder: tool results follow the order of the
// calls in the latest assistant turn; results with unknown ids count as position 0.
void sort_tool_results(std::vector<Message>& messages) {
  std::map<std::string, size_t> call_order;
  for (Message& message : messages) {
    if (message.role == "assistant" && !message.tool_calls.empty()) {
      call_order.clear();
      for (size_t i = 0; i < message.tool_calls.size(); ++i) {
        if (!message.tool_calls[i].id.empty()) call_order[message.tool_calls[i].id] = i;
      }
    } else if (message.role == "user" && message.has_blocks) {
      std::vector<Block> results;
      for (const Block& block : message.blocks) {
        if (block.tool_result) results.push_back(block);
      }
      if (results.size() <= 1 || call_order.empty()) continue;
      const auto order = [&](const Block& block) {
        const auto it = call_order.find(block.tool_use_id);
        return it == call_order.end() ? size_t{0} : it->second;
      };
      std::stable_sort(results.begin(), results.end(),
                       [&](const Block& a, const Block& b) { return order(a) < order(b); });
      size_t next = 0;
      for (Block& block : message.blocks) {
        if (block.tool_result) block = results[next++];
      }
    }
  }
}

int last_user_index(const std::vector<Message>& messages) {
  for (size_t i = messages.size(); i-- > 0;) {
    if (messages[i].role == "user" || messages[i].role == "developer") return static_cast<int>(i);
  }
  return -1;
}

// _drop_thinking_messages of the official encoder.
std::vector<Message> drop_thinking_messages(std::vector<Message> messages) {
  const int last_user = last_user_index(messages);
  std::vector<Message> kept;
  for (size_t i = 0; i < messages.size(); ++i) {
    Message& message = messages[i];
    const std::string& role = message.role;
    if (role == "user" || role == "system" || role == "tool" || role == "latest_reminder" ||
        role == "direct_search_results" || static_cast<int>(i) >= last_user) {
      kept.push_back(std::move(message));
    } else if (role == "assistant") {
      message.reasoning_content.clear();
      kept.push_back(std::move(message));
    }
    // Developer turns (and unknown roles) before the last user turn are dropped.
  }
  return kept;
}

std::string render_tools(const OrderedJson& tools) {
  std::string schemas;
  for (size_t i = 0; i < tools.size(); ++i) {
    const OrderedJson& tool = tools[i];
    const OrderedJson* function = tool.is_object() ? field(tool, "function") : nullptr;
    if (function == nullptr) fail("tools[", i, "] needs a \"function\" object");
    if (i > 0) schemas.push_back('\n');
    schemas.append(python_json_dumps(*function));
  }
  std::string text = replace_all(std::string(kToolsTemplate), "@DSML@", tokens::kDsml);
  return replace_all(std::move(text), "@SCHEMAS@", schemas);
}

std::string render_response_format(const OrderedJson& format) {
  return std::string(kResponseFormatHeader) + python_json_dumps(format);
}

// encode_arguments_to_dsml of the official encoder: one DSML parameter per top-level key of the
// arguments object; strings raw, everything else as JSON. Arguments that are not a JSON object
// become a single "arguments" parameter, as the official encoder does when they do not parse.
std::string render_arguments(const OrderedJson& arguments) {
  OrderedJson parsed;
  if (arguments.is_string()) {
    parsed = OrderedJson::parse(arguments.get<std::string>(), nullptr, /*allow_exceptions=*/false);
  } else {
    parsed = arguments;
  }
  if (!parsed.is_object()) parsed = OrderedJson{{"arguments", arguments}};

  std::string out;
  bool first = true;
  for (auto it = parsed.begin(); it != parsed.end(); ++it) {
    if (!first) out.push_back('\n');
    first = false;
    const bool is_string = it.value().is_string();
    out.append("<").append(tokens::kDsml).append("parameter name=\"").append(it.key());
    out.append("\" string=\"").append(is_string ? "true" : "false").append("\">");
    out.append(is_string ? it.value().get<std::string>() : python_json_dumps(it.value()));
    out.append("</").append(tokens::kDsml).append("parameter>");
  }
  return out;
}

std::string render_tool_calls(const std::vector<ToolCall>& calls) {
  std::string out = "\n\n<";
  out.append(tokens::kDsml).append("tool_calls>\n");
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i > 0) out.push_back('\n');
    out.append("<").append(tokens::kDsml).append("invoke name=\"").append(calls[i].name);
    out.append("\">\n").append(render_arguments(calls[i].arguments)).append("\n</");
    out.append(tokens::kDsml).append("invoke>");
  }
  out.append("\n</").append(tokens::kDsml).append("tool_calls>");
  return out;
}

struct RenderContext {
  const std::vector<Message>& messages;
  bool thinking;
  bool drop_thinking;
  bool add_generation_prompt;
  ReasoningEffort effort;
};

// render_message of the official encoder.
std::string render_message(const RenderContext& context, size_t index) {
  const std::vector<Message>& messages = context.messages;
  const Message& message = messages[index];
  const int last_user = last_user_index(messages);
  std::string prompt;

  if (index == 0 && context.thinking && context.effort == ReasoningEffort::kMax) {
    prompt.append(kReasoningEffortMax);
  }

  const std::string& role = message.role;
  if (role == "system") {
    prompt.append(message.content);
    if (message.tools) prompt.append("\n\n").append(render_tools(*message.tools));
    if (message.response_format) {
      prompt.append("\n\n").append(render_response_format(*message.response_format));
    }
  } else if (role == "developer") {
    if (!message.content_truthy) fail("a developer message needs non-empty content");
    prompt.append(tokens::kUser).append(message.content);
    if (message.tools) prompt.append("\n\n").append(render_tools(*message.tools));
    if (message.response_format) {
      prompt.append("\n\n").append(render_response_format(*message.response_format));
    }
  } else if (role == "user") {
    prompt.append(tokens::kUser);
    if (message.has_blocks && !message.blocks.empty()) {
      for (size_t i = 0; i < message.blocks.size(); ++i) {
        if (i > 0) prompt.append("\n\n");
        const Block& block = message.blocks[i];
        if (block.tool_result) {
          prompt.append("<tool_result>").append(block.text).append("</tool_result>");
        } else {
          prompt.append(block.text);
        }
      }
    } else {
      prompt.append(message.content);
    }
  } else if (role == "latest_reminder") {
    prompt.append(tokens::kLatestReminder).append(message.content);
  } else if (role == "assistant") {
    const bool previous_has_task = index > 0 && messages[index - 1].task.has_value();
    if (context.thinking && !previous_has_task &&
        (!context.drop_thinking || static_cast<int>(index) > last_user)) {
      prompt.append(message.reasoning_content).append(tokens::kThinkEnd);
    }
    prompt.append(message.content);
    if (!message.tool_calls.empty()) prompt.append(render_tool_calls(message.tool_calls));
    if (!message.wo_eos) prompt.append(tokens::kEos);
  } else {
    fail("message role '", role,
         "' is not one of system, user, assistant, tool, developer, latest_reminder");
  }

  // What follows the message depends on the next one: nothing before a user-like turn.
  if (index + 1 < messages.size() && messages[index + 1].role != "assistant" &&
      messages[index + 1].role != "latest_reminder") {
    return prompt;
  }
  if (index + 1 == messages.size() && !context.add_generation_prompt) return prompt;

  if (message.task) {
    const auto it = task_tokens().find(*message.task);
    if (it == task_tokens().end()) {
      fail("task '", *message.task,
           "' is not one of action, query, authority, domain, title, read_url");
    }
    if (*message.task != "action") {
      prompt.append(it->second);
    } else {
      prompt.append(tokens::kAssistant);
      prompt.append(context.thinking ? tokens::kThinkStart : tokens::kThinkEnd);
      prompt.append(it->second);
    }
  } else if (role == "user" || role == "developer") {
    prompt.append(tokens::kAssistant);
    const bool open_thinking =
        context.thinking && (!context.drop_thinking || static_cast<int>(index) >= last_user);
    prompt.append(open_thinking ? tokens::kThinkStart : tokens::kThinkEnd);
  }
  return prompt;
}

}  // namespace

std::string encode_chat(const OrderedJson& messages, const ChatOptions& options) {
  std::vector<Message> merged = merge_tool_messages(messages);
  sort_tool_results(merged);

  const bool any_tools = std::any_of(merged.begin(), merged.end(),
                                     [](const Message& m) { return m.tools != nullptr; });
  const bool thinking = options.thinking_mode == ThinkingMode::kThinking;
  const bool drop_thinking = options.drop_thinking && !any_tools;
  if (thinking && drop_thinking) merged = drop_thinking_messages(std::move(merged));

  std::string prompt;
  if (options.add_bos) prompt.append(tokens::kBos);
  const RenderContext context{merged, thinking, drop_thinking, options.add_generation_prompt,
                              options.reasoning_effort};
  for (size_t index = 0; index < merged.size(); ++index) {
    try {
      prompt.append(render_message(context, index));
    } catch (const Error& error) {
      fail("chat message ", index, " (after merging tool results): ", error.what());
    }
  }
  return prompt;
}

std::string encode_chat(const OrderedJson& messages, const OrderedJson& tools,
                        const ChatOptions& options) {
  if (tools.is_null() || (tools.is_array() && tools.empty())) {
    return encode_chat(messages, options);
  }
  if (!tools.is_array()) fail("tools must be an array, found ", tools.type_name());
  if (!messages.is_array()) fail("messages must be an array, found ", messages.type_name());
  OrderedJson with_tools = messages;
  const bool leading_system = !with_tools.empty() && with_tools[0].is_object() &&
                              with_tools[0].contains("role") && with_tools[0]["role"] == "system";
  if (leading_system) {
    with_tools[0]["tools"] = tools;
  } else {
    with_tools.insert(with_tools.begin(),
                      OrderedJson{{"role", "system"}, {"content", ""}, {"tools", tools}});
  }
  return encode_chat(with_tools, options);
}

ThinkingMode parse_thinking_mode(std::string_view name) {
  if (name == "chat") return ThinkingMode::kChat;
  if (name == "thinking") return ThinkingMode::kThinking;
  fail("thinking mode must be 'chat' or 'thinking', found '", name, "'");
}

ReasoningEffort parse_reasoning_effort(std::string_view name) {
  // OpenAI's low / medium have no V4 counterpart: they leave the prompt as the default does.
  if (name.empty() || name == "default" || name == "none" || name == "low" || name == "medium") {
    return ReasoningEffort::kDefault;
  }
  if (name == "high") return ReasoningEffort::kHigh;
  if (name == "max") return ReasoningEffort::kMax;
  fail("reasoning_effort must be low, medium, high or max, found '", name, "'");
}

}  // namespace longctx::text

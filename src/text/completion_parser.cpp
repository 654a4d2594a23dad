#include "text/completion_parser.h"

#include <algorithm>
#include <initializer_list>

#include <nlohmann/json.hpp>

#include "text/python_json.h"
#include "text/special_tokens.h"

namespace longctx::text {
namespace {

// Bounds that turn endless or absurd markup into "malformed" instead of buffering forever.
constexpr size_t kMaxAttributeBytes = 1024;
constexpr size_t kMaxSpaceRun = 64;

constexpr std::string_view kToolCallsAfterBlankLine = "\n\n<｜DSML｜tool_calls>";
constexpr std::string_view kToolCallsAfterNewline = "\n<｜DSML｜tool_calls>";

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// Length of the longest suffix of `text` that is a proper prefix of one of `markers`: those
// bytes may still become a marker, so they are held back.
size_t held_suffix(std::string_view text, std::initializer_list<std::string_view> markers) {
  size_t longest = 0;
  for (const std::string_view marker : markers) {
    const size_t limit = std::min(text.size(), marker.size() - 1);
    for (size_t length = limit; length > longest; --length) {
      if (text.substr(text.size() - length) == marker.substr(0, length)) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}

size_t leading_spaces(std::string_view text) {
  size_t count = 0;
  while (count < text.size() && is_space(text[count]))
    ++count;
  return count;
}

}  // namespace

CompletionParser::CompletionParser(CompletionParserOptions options)
    : options_(options), state_(options.thinking ? State::kThinkPrefix : State::kContent) {}

CompletionDelta CompletionParser::feed(std::string_view text) {
  CompletionDelta delta;
  if (finished_ || state_ == State::kDone) return delta;
  pending_.append(text);
  run(delta, /*at_end=*/false);
  return delta;
}

CompletionDelta CompletionParser::finish() {
  CompletionDelta delta;
  if (finished_) return delta;
  run(delta, /*at_end=*/true);
  finished_ = true;
  return delta;
}

void CompletionParser::run(CompletionDelta& delta, bool at_end) {
  for (;;) {
    Step step = Step::kNeedMore;
    switch (state_) {
      case State::kThinkPrefix:
        if (pending_.starts_with(tokens::kThinkStart)) {
          pending_.erase(0, tokens::kThinkStart.size());
          state_ = State::kReasoning;
          step = Step::kProgress;
        } else if (!pending_.empty() && !tokens::kThinkStart.starts_with(pending_)) {
          state_ = State::kReasoning;
          step = Step::kProgress;
        }
        break;
      case State::kReasoning:
        step = step_reasoning(delta);
        break;
      case State::kContent:
        step = step_content(delta, /*tools_allowed=*/true);
        break;
      case State::kPlainContent:
        step = step_content(delta, /*tools_allowed=*/false);
        break;
      case State::kToolBlock:
        step = step_tool_block(delta);
        if (step == Step::kError) {
          fail_tool_block(delta);
          step = Step::kProgress;
        }
        break;
      case State::kAfterToolBlock:
        step = step_after_tool_block();
        break;
      case State::kDone:
        pending_.clear();
        return;
    }
    if (step == Step::kNeedMore) break;
  }
  if (!at_end) return;

  // The completion ended: what was held back because it might start a marker is plain text.
  switch (state_) {
    case State::kThinkPrefix:
    case State::kReasoning:
      if (options_.unclosed_reasoning_is_content) {
        held_reasoning_.append(pending_);
        emit_content(delta, held_reasoning_);
        held_reasoning_.clear();
      } else {
        emit_reasoning(delta, pending_);
      }
      break;
    case State::kContent:
    case State::kPlainContent:
      emit_content(delta, pending_);
      break;
    case State::kToolBlock:
      fail_tool_block(delta);
      emit_content(delta, pending_);
      break;
    case State::kAfterToolBlock:
      if (leading_spaces(pending_) != pending_.size()) emit_content(delta, pending_);
      break;
    case State::kDone:
      break;
  }
  pending_.clear();
  state_ = State::kDone;
}

CompletionParser::Step CompletionParser::step_reasoning(CompletionDelta& delta) {
  const size_t end = pending_.find(tokens::kThinkEnd);
  const size_t eos = pending_.find(tokens::kEos);
  if (end != std::string::npos && (eos == std::string::npos || end < eos)) {
    held_reasoning_.append(pending_, 0, end);
    emit_reasoning(delta, held_reasoning_);
    held_reasoning_.clear();
    pending_.erase(0, end + tokens::kThinkEnd.size());
    result_.reasoning_closed = true;
    state_ = State::kContent;
    return Step::kProgress;
  }
  if (eos != std::string::npos) {
    held_reasoning_.append(pending_, 0, eos);
    if (options_.unclosed_reasoning_is_content) {
      emit_content(delta, held_reasoning_);
    } else {
      emit_reasoning(delta, held_reasoning_);
    }
    held_reasoning_.clear();
    pending_.clear();
    result_.saw_eos = true;
    state_ = State::kDone;
    return Step::kProgress;
  }
  const size_t ready = pending_.size() - held_suffix(pending_, {tokens::kThinkEnd, tokens::kEos});
  if (options_.unclosed_reasoning_is_content) {
    held_reasoning_.append(pending_, 0, ready);
  } else {
    emit_reasoning(delta, std::string_view(pending_).substr(0, ready));
  }
  pending_.erase(0, ready);
  return Step::kNeedMore;
}

CompletionParser::Step CompletionParser::step_content(CompletionDelta& delta, bool tools_allowed) {
  const size_t eos = pending_.find(tokens::kEos);
  const size_t block = tools_allowed ? pending_.find(tokens::kToolCallsOpen) : std::string::npos;
  if (block != std::string::npos && (eos == std::string::npos || block < eos)) {
    // The official format puts a blank line before the block; it belongs to the markup.
    size_t newlines = 0;
    while (newlines < 2 && newlines < block && pending_[block - newlines - 1] == '\n')
      ++newlines;
    emit_content(delta, std::string_view(pending_).substr(0, block - newlines));
    raw_.assign(pending_, block - newlines, newlines + tokens::kToolCallsOpen.size());
    pending_.erase(0, block + tokens::kToolCallsOpen.size());
    state_ = State::kToolBlock;
    tool_state_ = ToolState::kBetweenInvokes;
    return Step::kProgress;
  }
  if (eos != std::string::npos) {
    emit_content(delta, std::string_view(pending_).substr(0, eos));
    pending_.clear();
    result_.saw_eos = true;
    state_ = State::kDone;
    return Step::kProgress;
  }
  const size_t held = tools_allowed
                          ? held_suffix(pending_, {kToolCallsAfterBlankLine, kToolCallsAfterNewline,
                                                   tokens::kToolCallsOpen, tokens::kEos})
                          : held_suffix(pending_, {tokens::kEos});
  const size_t ready = pending_.size() - held;
  emit_content(delta, std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return Step::kNeedMore;
}

CompletionParser::Step CompletionParser::step_after_tool_block() {
  const size_t spaces = leading_spaces(pending_);
  if (spaces == pending_.size()) return Step::kNeedMore;
  const std::string_view rest = std::string_view(pending_).substr(spaces);
  if (rest.starts_with(tokens::kEos)) {
    pending_.erase(0, spaces);  // white space between the block and the end marker
  } else if (tokens::kEos.starts_with(rest)) {
    return Step::kNeedMore;
  }
  // Anything else after the block is content (the official parser would reject it).
  state_ = State::kContent;
  return Step::kProgress;
}

void CompletionParser::consume(size_t bytes) {
  raw_.append(pending_, 0, bytes);
  pending_.erase(0, bytes);
}

CompletionParser::Step CompletionParser::expect_literal(std::string_view literal) {
  const size_t available = std::min(pending_.size(), literal.size());
  if (std::string_view(pending_).substr(0, available) != literal.substr(0, available)) {
    return Step::kError;
  }
  if (available < literal.size()) return Step::kNeedMore;
  consume(literal.size());
  return Step::kProgress;
}

// Reads ` NAME="VALUE"` (any white space before NAME).
CompletionParser::Step CompletionParser::read_attribute(std::string_view name, std::string& value) {
  const size_t spaces = leading_spaces(pending_);
  if (spaces > kMaxSpaceRun) return Step::kError;
  if (spaces == pending_.size()) return Step::kNeedMore;
  const std::string prefix = std::string(name) + "=\"";
  const std::string_view rest = std::string_view(pending_).substr(spaces);
  const size_t available = std::min(rest.size(), prefix.size());
  if (rest.substr(0, available) != std::string_view(prefix).substr(0, available)) {
    return Step::kError;
  }
  if (available < prefix.size()) return Step::kNeedMore;
  const size_t start = spaces + prefix.size();
  const size_t quote = pending_.find('"', start);
  if (quote == std::string::npos) {
    return pending_.size() - start > kMaxAttributeBytes ? Step::kError : Step::kNeedMore;
  }
  if (quote - start > kMaxAttributeBytes) return Step::kError;
  const std::string_view text = std::string_view(pending_).substr(start, quote - start);
  if (text.find_first_of("\n<>") != std::string_view::npos) return Step::kError;
  value = std::string(text);
  consume(quote + 1);
  return Step::kProgress;
}

CompletionParser::Step CompletionParser::expect_tag_end() {
  const size_t spaces = leading_spaces(pending_);
  if (spaces > kMaxSpaceRun) return Step::kError;
  if (spaces == pending_.size()) return Step::kNeedMore;
  if (pending_[spaces] != '>') return Step::kError;
  consume(spaces + 1);
  return Step::kProgress;
}

CompletionParser::Step CompletionParser::step_tool_block(CompletionDelta& delta) {
  switch (tool_state_) {
    case ToolState::kBetweenInvokes:
    case ToolState::kInvokeBody: {
      consume(leading_spaces(pending_));
      if (pending_.empty()) return Step::kNeedMore;
      const bool between = tool_state_ == ToolState::kBetweenInvokes;
      const Step open = expect_literal(between ? tokens::kInvokeOpen : tokens::kParameterOpen);
      if (open == Step::kProgress) {
        if (between) {
          invoke_name_.clear();
          parameters_.clear();
          tool_state_ = ToolState::kInvokeName;
        } else {
          parameters_.emplace_back();
          tool_state_ = ToolState::kParameterName;
        }
        return Step::kProgress;
      }
      const Step close = expect_literal(between ? tokens::kToolCallsClose : tokens::kInvokeClose);
      if (close == Step::kProgress) {
        if (between) {
          state_ = State::kAfterToolBlock;
        } else {
          emit_tool_call(delta);
          tool_state_ = ToolState::kBetweenInvokes;
        }
        raw_.clear();
        return Step::kProgress;
      }
      return open == Step::kNeedMore || close == Step::kNeedMore ? Step::kNeedMore : Step::kError;
    }
    case ToolState::kInvokeName: {
      const Step step = read_attribute("name", invoke_name_);
      if (step == Step::kProgress) tool_state_ = ToolState::kInvokeTagEnd;
      return step;
    }
    case ToolState::kInvokeTagEnd: {
      const Step step = expect_tag_end();
      if (step == Step::kProgress) tool_state_ = ToolState::kInvokeBody;
      return step;
    }
    case ToolState::kParameterName: {
      std::string name;
      const Step step = read_attribute("name", name);
      if (step != Step::kProgress) return step;
      for (size_t i = 0; i + 1 < parameters_.size(); ++i) {
        if (parameters_[i].name == name) return Step::kError;  // duplicate parameter
      }
      parameters_.back().name = std::move(name);
      tool_state_ = ToolState::kParameterKind;
      return Step::kProgress;
    }
    case ToolState::kParameterKind: {
      const size_t spaces = leading_spaces(pending_);
      if (spaces > kMaxSpaceRun) return Step::kError;
      if (spaces == pending_.size()) return Step::kNeedMore;
      if (pending_[spaces] == '>') {
        // No string="..." attribute: the value's kind is decided from its text.
        consume(spaces + 1);
        parameters_.back().kind = ParameterKind::kUnspecified;
        tool_state_ = ToolState::kParameterValue;
        search_from_ = 0;
        return Step::kProgress;
      }
      std::string kind;
      const Step step = read_attribute("string", kind);
      if (step != Step::kProgress) return step;
      if (kind == "true") {
        parameters_.back().kind = ParameterKind::kString;
      } else if (kind == "false") {
        parameters_.back().kind = ParameterKind::kJson;
      } else {
        return Step::kError;
      }
      tool_state_ = ToolState::kParameterTagEnd;
      return Step::kProgress;
    }
    case ToolState::kParameterTagEnd: {
      const Step step = expect_tag_end();
      if (step == Step::kProgress) {
        tool_state_ = ToolState::kParameterValue;
        search_from_ = 0;
      }
      return step;
    }
    case ToolState::kParameterValue: {
      const size_t end = pending_.find(tokens::kParameterClose, search_from_);
      if (end == std::string::npos) {
        // Resume the search where a marker could still begin, so long values stay linear.
        const size_t keep = tokens::kParameterClose.size() - 1;
        search_from_ = pending_.size() > keep ? pending_.size() - keep : 0;
        return Step::kNeedMore;
      }
      parameters_.back().value = pending_.substr(0, end);
      consume(end + tokens::kParameterClose.size());
      tool_state_ = ToolState::kInvokeBody;
      return Step::kProgress;
    }
  }
  return Step::kError;
}

void CompletionParser::fail_tool_block(CompletionDelta& delta) {
  emit_content(delta, raw_);
  raw_.clear();
  result_.malformed = true;
  state_ = State::kPlainContent;
}

void CompletionParser::emit_reasoning(CompletionDelta& delta, std::string_view text) {
  delta.reasoning_content.append(text);
  result_.reasoning_content.append(text);
}

void CompletionParser::emit_content(CompletionDelta& delta, std::string_view text) {
  delta.content.append(text);
  result_.content.append(text);
}

void CompletionParser::emit_tool_call(CompletionDelta& delta) {
  ParsedToolCall call;
  call.name = invoke_name_;
  call.arguments.push_back('{');
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const Parameter& parameter = parameters_[i];
    if (i > 0) call.arguments.append(", ");
    append_python_json_string(call.arguments, parameter.name);
    call.arguments.append(": ");
    // Non-string values go in as written when they are JSON; anything else is quoted so the
    // arguments always parse.
    if (parameter.kind != ParameterKind::kString && nlohmann::json::accept(parameter.value)) {
      call.arguments.append(parameter.value);
    } else {
      append_python_json_string(call.arguments, parameter.value);
    }
  }
  call.arguments.append("}");
  delta.tool_calls.push_back(call);
  result_.tool_calls.push_back(std::move(call));
  parameters_.clear();
}

ParsedCompletion parse_completion(std::string_view text, CompletionParserOptions options) {
  CompletionParser parser(options);
  parser.feed(text);
  parser.finish();
  return parser.result();
}

}  // namespace longctx::text

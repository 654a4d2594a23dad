// The marker strings of DeepSeek-V4's chat format (dsv4-architecture.md section 5). The chat
// encoder writes them, the completion parser looks for them and the test tokenizer gives each
// one a single id. "｜" is U+FF5C and "▁" is U+2581.
#pragma once

#include <string_view>

namespace longctx::text::tokens {

inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kPad = "<｜▁pad▁｜>";
inline constexpr std::string_view kUser = "<｜User｜>";
inline constexpr std::string_view kAssistant = "<｜Assistant｜>";
inline constexpr std::string_view kLatestReminder = "<｜latest_reminder｜>";
inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";
inline constexpr std::string_view kDsml = "｜DSML｜";

// Quick-instruction task tokens ("task" field of a message).
inline constexpr std::string_view kTaskAction = "<｜action｜>";
inline constexpr std::string_view kTaskQuery = "<｜query｜>";
inline constexpr std::string_view kTaskAuthority = "<｜authority｜>";
inline constexpr std::string_view kTaskDomain = "<｜domain｜>";
inline constexpr std::string_view kTaskTitle = "<｜title｜>";
inline constexpr std::string_view kTaskReadUrl = "<｜read_url｜>";
inline constexpr std::string_view kTaskExtractedUrl = "<｜extracted_url｜>";

// DSML tool-call markup, built from kDsml.
inline constexpr std::string_view kToolCallsOpen = "<｜DSML｜tool_calls>";
inline constexpr std::string_view kToolCallsClose = "</｜DSML｜tool_calls>";
inline constexpr std::string_view kInvokeOpen = "<｜DSML｜invoke";
inline constexpr std::string_view kInvokeClose = "</｜DSML｜invoke>";
inline constexpr std::string_view kParameterOpen = "<｜DSML｜parameter";
inline constexpr std::string_view kParameterClose = "</｜DSML｜parameter>";

}  // namespace longctx::text::tokens

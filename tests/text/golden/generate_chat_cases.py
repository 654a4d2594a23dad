#!/usr/bin/env python3
"""Writes fixtures/chat_cases.json: our own chat-encoding cases with the prompts the official
DeepSeek-V4 encoder (encoding_dsv4.py, not part of this repository) produces, and the completions
cut from those prompts with what the official parser makes of them.

Usage: python3 tests/text/golden/generate_chat_cases.py PATH/TO/encoding_dsv4.py
"""
import copy
import importlib.util
import json
import sys

spec = importlib.util.spec_from_file_location("encoding_dsv4", sys.argv[1])
official = importlib.util.module_from_spec(spec)
spec.loader.exec_module(official)

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city — 天气",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7, "default": 1},
        "threshold": {"type": "number", "default": 0.5, "examples": [1e-05, 2.5e+20, 1.0, -0.0]},
        "units": {"enum": ["c", "f"]}}, "required": ["city"]}}}
CALC_TOOL = {"type": "function", "function": {
    "name": "calc", "description": "Evaluate \"math\"\n\twith escapes \\ and \u0001 control",
    "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}

CASES = [
    {"name": "thinking_three_turns_drop_reasoning", "thinking_mode": "thinking", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "reasoning_content": "Add.", "content": "2"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "reasoning_content": "Add again.", "content": "4"},
        {"role": "user", "content": "3+3?"}]},
    {"name": "thinking_keep_reasoning", "thinking_mode": "thinking", "drop_thinking": False, "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "reasoning_content": "Greet.", "content": "Hello!"},
        {"role": "user", "content": "Bye"}]},
    {"name": "chat_multi_turn", "thinking_mode": "chat", "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! 👋", "reasoning_content": "ignored in chat mode"},
        {"role": "user", "content": "Tell me a joke"}]},
    {"name": "reasoning_effort_max", "thinking_mode": "thinking", "reasoning_effort": "max", "messages": [
        {"role": "system", "content": "Think hard."}, {"role": "user", "content": "Prove it."}]},
    {"name": "reasoning_effort_max_chat_mode", "thinking_mode": "chat", "reasoning_effort": "max", "messages": [
        {"role": "user", "content": "No prefix in chat mode."}]},
    {"name": "reasoning_effort_high", "thinking_mode": "thinking", "reasoning_effort": "high", "messages": [
        {"role": "user", "content": "High is no prefix."}]},
    {"name": "tools_parallel_calls_results_reordered", "thinking_mode": "thinking", "tools": [WEATHER_TOOL, CALC_TOOL], "messages": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Tokyo, and 2**10?"},
        {"role": "assistant", "reasoning_content": "Three calls.", "content": "Checking.", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 3, \"threshold\": 1.5e-07, \"flags\": [true, null, {\"x\": 1.0}]}"}},
            {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"東京\", \"units\": \"c\"}"}},
            {"id": "c", "type": "function", "function": {"name": "calc", "arguments": "{\"expr\": \"2**10 \\\"quoted\\\" <tag>\"}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "1024"},
        {"role": "tool", "tool_call_id": "a", "content": "{\"temp\": 18}"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "22C"}, {"type": "image"}]},
        {"role": "user", "content": "Thanks, summarize."},
        {"role": "assistant", "reasoning_content": "Summarize.", "content": "Paris 18, Tokyo 22C, 1024."},
        {"role": "user", "content": "And tomorrow?"}]},
    {"name": "tool_call_unparsable_arguments", "thinking_mode": "chat", "tools": [CALC_TOOL], "messages": [
        {"role": "user", "content": "calc"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "calc", "arguments": "not json {"}}]},
        {"role": "tool", "tool_call_id": "x", "content": "error"}]},
    {"name": "developer_tools_response_format_reminder", "thinking_mode": "thinking", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "latest_reminder", "content": "2026-01-01, Paris"},
        {"role": "developer", "content": "Answer in JSON.", "tools": [WEATHER_TOOL],
         "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"a": {"type": "number", "default": 100000.0}}}}}},
        {"role": "assistant", "reasoning_content": "Need weather.", "content": "", "tool_calls": [
            {"id": "w", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "w", "content": "sunny"},
        {"role": "assistant", "reasoning_content": "Done.", "content": "{\"a\": 1}"}]},
    {"name": "system_response_format", "thinking_mode": "chat", "messages": [
        {"role": "system", "content": "Reply in JSON.", "response_format": {"type": "json_object"}},
        {"role": "user", "content": "Go"}]},
    {"name": "developer_dropped_before_last_user", "thinking_mode": "thinking", "messages": [
        {"role": "developer", "content": "Old instructions."},
        {"role": "assistant", "reasoning_content": "r0", "content": "ok"},
        {"role": "user", "content": "New question"}]},
    {"name": "consecutive_users_merge", "thinking_mode": "chat", "messages": [
        {"role": "user", "content": "part one"}, {"role": "user", "content": "part two"}]},
    {"name": "task_query_authority_domain", "thinking_mode": "chat", "messages": [
        {"role": "user", "content": "Best hotels in Rome", "task": "query"}]},
    {"name": "task_authority", "thinking_mode": "thinking", "messages": [
        {"role": "user", "content": "Is aspirin safe?", "task": "authority"}]},
    {"name": "task_action_thinking", "thinking_mode": "thinking", "messages": [
        {"role": "user", "content": "Latest news?", "task": "action"}]},
    {"name": "task_title_after_answer", "thinking_mode": "thinking", "messages": [
        {"role": "user", "content": "Explain tides"},
        {"role": "assistant", "reasoning_content": "Moon.", "content": "The moon pulls the sea.", "task": "title"},
        {"role": "assistant", "content": "Tides explained"}]},
    {"name": "prefix_completion_wo_eos", "thinking_mode": "thinking", "messages": [
        {"role": "user", "content": "Write a poem"},
        {"role": "assistant", "reasoning_content": "Rhymes.", "content": "Roses are", "wo_eos": True}]},
    {"name": "reminder_after_user_quirk", "thinking_mode": "chat", "messages": [
        {"role": "user", "content": "hello"},
        {"role": "latest_reminder", "content": "date"},
        {"role": "user", "content": "again"}]},
    {"name": "no_system_special_text_in_content", "thinking_mode": "thinking", "messages": [
        {"role": "user", "content": "What does </think> or <｜User｜> mean in \"text\"?\n\n"}]},
]


def cut_completions(prompt, thinking):
    """The assistant turns of a prompt: text after <｜Assistant｜><think> / </think> up to the EOS."""
    out = []
    start = 0
    while True:
        at = prompt.find("<｜Assistant｜>", start)
        if at < 0:
            return out
        at += len("<｜Assistant｜>")
        mode = "chat"
        if prompt.startswith("<think>", at):
            at += len("<think>")
            mode = "thinking"
        elif prompt.startswith("</think>", at):
            at += len("</think>")
        end = prompt.find("<｜end▁of▁sentence｜>", at)
        if end >= 0 and not prompt.startswith("<｜", at):
            text = prompt[at:end + len("<｜end▁of▁sentence｜>")]
            try:
                parsed = official.parse_message_from_completion_text(text, thinking_mode=mode)
                out.append({"text": text, "thinking": mode == "thinking", "reasoning_content": parsed["reasoning_content"],
                            "content": parsed["content"],
                            "tool_calls": [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in parsed["tool_calls"]]})
            except Exception:
                pass
        start = at


def main():
    cases = []
    for case in CASES:
        messages = copy.deepcopy(case["messages"])
        if "tools" in case:
            # The OpenAI request shape: tools beside the messages, attached to the system message.
            if messages[0]["role"] == "system":
                messages[0]["tools"] = case["tools"]
            else:
                messages.insert(0, {"role": "system", "content": "", "tools": case["tools"]})
        prompt = official.encode_messages(messages, thinking_mode=case["thinking_mode"],
                                          drop_thinking=case.get("drop_thinking", True),
                                          reasoning_effort=case.get("reasoning_effort"))
        out = dict(case)
        out["expected_prompt"] = prompt
        out["completions"] = cut_completions(prompt, case["thinking_mode"] == "thinking")
        cases.append(out)
    # The completions inside the four official outputs too.
    fixture_completions = []
    for i in range(1, 5):
        with open(f"tests/text/fixtures/encoding/test_output_{i}.txt", encoding="utf-8", newline="") as f:
            fixture_completions += cut_completions(f.read(), None)
    with open("tests/text/fixtures/chat_cases.json", "w", encoding="utf-8") as f:
        json.dump({"generator": "golden/generate_chat_cases.py with the official encoding_dsv4.py", "cases": cases,
                   "official_fixture_completions": fixture_completions}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(len(cases), "cases,", sum(len(c["completions"]) for c in cases), "completions")


if __name__ == "__main__":
    main()

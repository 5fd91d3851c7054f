"""Anthropic Messages ⇄ internal chat, field by field (no I/O): the request model's rules, the
internal body each field becomes, the message an internal completion becomes, and the event
stream an internal chunk stream becomes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from pendra.errors import NoCapacity, WorkerFailed
from pendra.server.api.anthropic.events import (MessageEvents, Messages, TokenCount, error_body,
                                                error_status, error_type)
from pendra.server.api.anthropic.schema import CountTokens, MessageCreate
from pendra.server.api.anthropic.translate import chat_body, count_body, message, tool_use_id

PNG = "iVBORw0KGgo="
TOOL = {"name": "get_weather", "description": "Weather", "cache_control": {"type": "ephemeral"},
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def body(**fields: Any) -> MessageCreate:
    base: dict[str, Any] = {"model": "m", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]}
    return MessageCreate.model_validate(base | fields)


def problem(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        body(**fields)
    return str(caught.value)


# --- request -------------------------------------------------------------------------------------


def test_minimal_request() -> None:
    """model, max_tokens and a string message become the internal chat's fields."""
    assert chat_body(body()) == {"model": "m", "stream": False, "max_tokens": 100,
                                 "messages": [{"role": "user", "content": "hi"}]}


def test_sampling_fields_and_stop_sequences() -> None:
    """temperature and top_p as they are; top_k and every stop sequence as Ollama options."""
    stops = [f"s{i}" for i in range(6)]
    internal = chat_body(body(temperature=0.2, top_p=0.8, top_k=40, stop_sequences=stops,
                              stream=True, metadata={"user_id": "u1"}))
    assert internal["temperature"] == 0.2 and internal["top_p"] == 0.8
    assert internal["options"] == {"top_k": 40, "stop": stops}
    assert internal["stream"] is True
    assert "metadata" not in internal


def test_system_string_and_blocks() -> None:
    """system, a string or text blocks (cache_control ignored), is the first message."""
    assert chat_body(body(system="be brief"))["messages"][0] == {"role": "system",
                                                                 "content": "be brief"}
    blocks = [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "b"}]
    assert chat_body(body(system=blocks))["messages"][0] == {"role": "system", "content": "a\nb"}


def test_user_blocks_text_and_images() -> None:
    """Text blocks join; a base64 image becomes a data: URI part beside the text."""
    internal = chat_body(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]))
    assert internal["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]
    only_text = chat_body(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]))
    assert only_text["messages"] == [{"role": "user", "content": "a\nb"}]


def test_assistant_history_tool_use_and_thinking() -> None:
    """An assistant's text, thinking and tool_use blocks become content, reasoning and tool_calls;
    redacted thinking is left out."""
    internal = chat_body(body(messages=[
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "let me check"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "cold"}]}]))
    assert internal["messages"][1] == {
        "role": "assistant", "content": "let me check", "reasoning": "hmm",
        "tool_calls": [{"id": "toolu_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}
    assert internal["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1",
                                       "content": "cold"}


def test_tool_results_come_first_errors_and_blocks() -> None:
    """tool_result blocks become tool messages before the rest of the user's message; is_error
    results say so; block content keeps text and images."""
    internal = chat_body(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "and now?"},
        {"type": "tool_result", "tool_use_id": "a", "is_error": True, "content": "boom"},
        {"type": "tool_result", "tool_use_id": "b", "content": [
            {"type": "text", "text": "see"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                         "data": PNG}}]},
        {"type": "tool_result", "tool_use_id": "c"}]}]))
    assert internal["messages"] == [
        {"role": "tool", "tool_call_id": "a", "content": "Error: boom"},
        {"role": "tool", "tool_call_id": "b", "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": ""},
        {"role": "user", "content": "and now?"}]


def test_tools_and_tool_choice() -> None:
    """Tools become function tools (input_schema → parameters); tool_choice auto offers all,
    none none, tool by name that one; any is refused; an unknown name is refused."""
    internal = chat_body(body(tools=[TOOL]))
    assert internal["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather", "parameters": TOOL["input_schema"]}}]
    assert "tool_choice" not in internal
    assert "tool_choice" not in chat_body(body(tools=[TOOL], tool_choice={"type": "auto"}))
    assert chat_body(body(tools=[TOOL], tool_choice={"type": "none"}))["tool_choice"] == "none"
    named = chat_body(body(tools=[TOOL], tool_choice={"type": "tool", "name": "get_weather",
                                                      "disable_parallel_tool_use": True}))
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert "cannot be honoured" in problem(tools=[TOOL], tool_choice={"type": "any"})
    assert "not among the tools" in problem(tools=[TOOL], tool_choice={"type": "tool",
                                                                       "name": "other"})
    assert "server tools" in problem(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "input_schema" in problem(tools=[{"name": "x"}])


def test_thinking_and_effort() -> None:
    """thinking enabled → think true, disabled → false, adaptive → the model's default;
    output_config.effort → a think level; its format → a JSON schema response format."""
    enabled = {"type": "enabled", "budget_tokens": 1024}
    assert chat_body(body(max_tokens=2000, thinking=enabled))["think"] is True
    assert chat_body(body(thinking={"type": "disabled"}))["think"] is False
    assert "think" not in chat_body(body(thinking={"type": "adaptive"}))
    assert chat_body(body(output_config={"effort": "xhigh"}))["think"] == "max"
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = chat_body(body(output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert fmt["response_format"] == {"type": "json_schema",
                                      "json_schema": {"name": "output", "schema": schema}}
    beta = chat_body(body(output_format={"type": "json_schema", "schema": schema}))
    assert beta["response_format"] == fmt["response_format"]
    assert "budget_tokens" in problem(thinking={"type": "enabled", "budget_tokens": 512})
    assert chat_body(body(max_tokens=1024, thinking=enabled))["think"] is True  # interleaved


@pytest.mark.parametrize("fields, says", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": None}, "max_tokens"),
    ({"temperature": 1.5}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "role"),
    ({"frobnicate": True}, "frobnicate"),
    ({"container": "c1"}, "container is not supported"),
    ({"mcp_servers": [{"type": "url", "url": "http://x"}]}, "mcp_servers is not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
     "'document' are not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                 "content": [{"type": "search_result"}]}]}]},
     "'search_result' are not supported"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}]},
     "url sources are not supported"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/tiff",
                                     "data": "x"}}]}]}, "media_type"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "not base64!"}}]}]}, "not valid base64"),
    ({"stop_sequences": ["\ud800"]}, "Unicode"),
], ids=lambda v: str(v)[:40])
def test_refused_requests(fields: dict[str, Any], says: str) -> None:
    """What Anthropic refuses (and what Pendra cannot serve) is refused, naming the field."""
    if fields.get("max_tokens", 1) is None:
        with pytest.raises(ValidationError) as caught:
            MessageCreate.model_validate({"model": "m", "messages": [
                {"role": "user", "content": "x"}]})
        assert says in str(caught.value)
        return
    assert says in problem(**fields)


def test_ignored_hints_are_accepted() -> None:
    """Fields Anthropic defines that change nothing here are accepted (Claude Code sends them)."""
    internal = chat_body(body(metadata={"user_id": "x"}, service_tier="auto",
                              cache_control={"type": "ephemeral"}, context_management={},
                              messages=[{"role": "user", "content": [
                                  {"type": "text", "text": "hi", "citations": None,
                                   "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]))
    assert internal["messages"] == [{"role": "user", "content": "hi"}]


def test_count_body_generates_nothing() -> None:
    """count_tokens asks for the same prompt with one token generated and no stream."""
    counted = CountTokens.model_validate({"model": "m", "system": "s", "tools": [TOOL],
                                          "messages": [{"role": "user", "content": "hi"}]})
    internal = count_body(counted)
    assert internal["options"] == {"num_predict": 1} and internal["stream"] is False
    assert internal["messages"][0] == {"role": "system", "content": "s"}
    assert internal["tools"][0]["function"]["name"] == "get_weather"
    assert "max_tokens" not in internal


# --- answer --------------------------------------------------------------------------------------


def completion(message_: dict[str, Any], finish: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "served",
            "choices": [{"index": 0, "message": message_, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}}


def test_message_text() -> None:
    """The envelope: id, type, role, the model as asked, text content, end_turn, usage."""
    got = message(completion({"role": "assistant", "content": "hello"}, "stop"), "asked", "msg_1")
    assert got == {"id": "msg_1", "type": "message", "role": "assistant", "model": "asked",
                   "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                   "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 4}}


def test_message_thinking_and_tool_use() -> None:
    """Thinking first (with its signature field), then text, then tool_use with parsed input and
    a toolu_ id; tool_calls → tool_use, length → max_tokens."""
    got = message(completion({"role": "assistant", "content": None, "reasoning": "hmm",
                              "tool_calls": [{"id": "call_ab12", "type": "function", "function": {
                                  "name": "f", "arguments": '{"x": [1, 2]}'}}]},
                             "tool_calls"), "m", "msg_2")
    assert got["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "tool_use", "id": "toolu_ab12", "name": "f", "input": {"x": [1, 2]}}]
    assert got["stop_reason"] == "tool_use"
    capped = message(completion({"role": "assistant", "content": "cut"}, "length"), "m", "msg_3")
    assert capped["stop_reason"] == "max_tokens"


def test_tool_use_ids() -> None:
    """Internal call ids become toolu_ ids, stably; toolu_ ids stay."""
    assert tool_use_id("call_k3x9") == "toolu_k3x9" == tool_use_id("call_k3x9")
    assert tool_use_id("toolu_1") == "toolu_1"
    assert tool_use_id(None).startswith("toolu_") and len(tool_use_id(None)) > 10


def test_dialects() -> None:
    """The messages dialect names its usage kind and the model as asked; count_tokens answers
    the prompt's token count."""
    dialect = Messages("asked", "req_1")
    assert dialect.usage_kind == "messages"
    assert dialect.whole(completion({"content": "x"}, "stop"))["model"] == "asked"
    assert dialect.whole(completion({"content": "x"}, "stop"))["id"] == dialect.msg_id
    assert TokenCount().whole(completion({"content": ""}, "length")) == {"input_tokens": 11}
    assert TokenCount().usage_kind == "count_tokens"


# --- stream --------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().strip().split("\n\n"):
        name, data = block.split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_stream_thinking_text_tool() -> None:
    """message_start and ping first; a block per kind, numbered in order, each closed before the
    next opens; message_delta with the stop reason and real usage; message_stop last."""
    writer = MessageEvents("asked", "msg_9", "req_9")
    raw = b"".join([
        writer.chunk(chunk({"role": "assistant", "content": "", "reasoning": "hm"})),
        writer.chunk(chunk({"content": "", "reasoning": "m"})),
        writer.chunk(chunk({"content": "Hi"})),
        writer.chunk(chunk({"content": " there"})),
        writer.chunk(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                            "function": {"name": "f", "arguments": '{"a":1}'}}]})),
        writer.chunk(chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                            "function": {"name": "g", "arguments": "{}"}}]})),
        writer.chunk(chunk({}, "tool_calls")),
        writer.end({"prompt_tokens": 5, "completion_tokens": 7}, "tool_calls")])
    got = events(raw)
    assert [name for name, _ in got] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in got)
    start = got[0][1]["message"]
    assert start == {"id": "msg_9", "type": "message", "role": "assistant", "model": "asked",
                     "content": [], "stop_reason": None, "stop_sequence": None,
                     "usage": {"input_tokens": 0, "output_tokens": 0}}
    assert got[2][1] == {"type": "content_block_start", "index": 0,
                         "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
    assert got[3][1]["delta"] == {"type": "thinking_delta", "thinking": "hm"}
    assert got[6][1]["content_block"] == {"type": "text", "text": ""}
    assert got[8][1] == {"type": "content_block_delta", "index": 1,
                         "delta": {"type": "text_delta", "text": " there"}}
    assert got[10][1]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "f",
                                           "input": {}}
    assert got[11][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":1}'}
    assert got[13][1]["index"] == 3
    assert got[-2][1] == {"type": "message_delta",
                          "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"input_tokens": 5, "output_tokens": 7}}


def test_stream_incremental_tool_arguments() -> None:
    """OpenAI-style pieces of one call's arguments extend the same tool_use block."""
    writer = MessageEvents("m", "msg", "")
    raw = writer.chunk(chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {
        "name": "f", "arguments": '{"a"'}}]})) + writer.chunk(chunk({"tool_calls": [
            {"index": 0, "function": {"arguments": ":1}"}}]}))
    raw += writer.chunk(chunk({"tool_calls": [{"index": 1, "id": "call_2", "function": {
        "name": "g", "arguments": "{"}}]})) + writer.chunk(chunk({"tool_calls": [
            {"index": 1, "function": {"arguments": "}"}}]}))
    got = events(raw)
    assert [(d["index"], d["delta"]["partial_json"]) for n, d in got
            if n == "content_block_delta"] == [(0, '{"a"'), (0, ":1}"), (1, "{"), (1, "}")]
    assert [d["content_block"]["id"] for n, d in got if n == "content_block_start"] == \
        ["toolu_1", "toolu_2"]


def test_stream_that_ends_at_once_and_max_tokens() -> None:
    """An answer with no content still opens with message_start and ends well."""
    writer = MessageEvents("m", "msg", "")
    got = events(writer.end({"prompt_tokens": 3, "completion_tokens": 0}, "length"))
    assert [n for n, _ in got] == ["message_start", "ping", "message_delta", "message_stop"]
    assert got[2][1]["delta"]["stop_reason"] == "max_tokens"


def test_stream_failure_is_one_error_event() -> None:
    """A failure mid-stream is one Anthropic error event, with the request id."""
    writer = MessageEvents("m", "msg", "req_7")
    writer.chunk(chunk({"content": "a"}))
    got = events(writer.fail(WorkerFailed("worker 'w' disconnected", worker_name="w")))
    assert got == [("error", {"type": "error", "request_id": "req_7", "error": {
        "type": "api_error", "message": "worker 'w' disconnected"}})]


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status, kind, expected_status, expected_type", [
    (400, "invalid_request_error", 400, "invalid_request_error"),
    (401, "authentication_error", 401, "authentication_error"),
    (403, "permission_error", 403, "permission_error"),
    (404, "not_found_error", 404, "not_found_error"),
    (404, "model_not_found", 404, "not_found_error"),
    (405, "method_not_allowed", 405, "invalid_request_error"),
    (413, "payload_too_large", 413, "request_too_large"),
    (429, "rate_limit_error", 429, "rate_limit_error"),
    (500, "internal_error", 500, "api_error"),
    (502, "worker_error", 502, "api_error"),
    (503, "overloaded_error", 529, "overloaded_error"),
    (503, "service_unavailable_error", 503, "overloaded_error"),
    (504, "timeout_error", 504, "timeout_error"),
])
def test_error_types_and_statuses(status: int, kind: str, expected_status: int,
                                  expected_type: str) -> None:
    """Pendra's errors take Anthropic's types; only the overloaded fleet changes status (529)."""
    assert error_status(status, kind) == expected_status
    assert error_type(status, kind) == expected_type
    assert error_body(status, "m", kind, "p", None, "req_1") == {
        "type": "error", "error": {"type": expected_type, "message": "m"}, "request_id": "req_1"}


def test_no_capacity_maps_to_529() -> None:
    exc = NoCapacity("busy")
    assert error_status(exc.status, exc.kind) == 529

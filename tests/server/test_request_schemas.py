"""The typed request bodies and the naming of a bad field, without HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pendra.server.api.body_types import MAX_JSON_DEPTH
from pendra.server.api.chat_schema import ChatCompletionCreate
from pendra.server.api.media_schema import EmbeddingCreate, ImageCreate
from pendra.server.errors import param_of

HELLO = [{"role": "user", "content": "hi"}]


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_full_openai_chat_body_is_accepted_and_passed_on_canonical() -> None:
    """Every mapped field in its OpenAI form validates; the worker gets what was sent (only
    what was sent), the ``schema`` alias kept, numbers as numbers, extras included."""
    body = {"model": "m", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:;base64,AA=="}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}],
        "stream": True, "stream_options": {"include_usage": True}, "max_tokens": "7",
        "temperature": 0, "top_p": 1, "stop": ["a", "b"], "seed": -1, "n": 1,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": nested(5)}}],
        "tool_choice": "auto", "response_format": {"type": "json_schema", "json_schema": {
            "name": "s", "schema": {"type": "object"}}},
        "reasoning_effort": "high", "options": {"num_ctx": 8192, "top_k": 3, "custom": True},
        "keep_alive": "5m", "metadata": {"k": "v"}}
    sent = ChatCompletionCreate.model_validate(body).to_worker()
    assert sent["max_tokens"] == 7 and sent["metadata"] == {"k": "v"}
    assert sent["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert sent["options"] == {"num_ctx": 8192, "top_k": 3, "custom": True}
    assert sent["messages"][2] == body["messages"][2] and "name" not in sent["messages"][0]


@pytest.mark.parametrize("body", [
    {"messages": HELLO},
    {"model": "m", "messages": [{"role": "user", "content": "\ud800"}]},
    {"model": "m\udc00", "messages": HELLO},
    {"model": "m", "messages": HELLO, "extra": nested(MAX_JSON_DEPTH + 1)},
    {"model": "m", "messages": HELLO, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": nested(MAX_JSON_DEPTH + 1)}}]},
    {"model": "m", "messages": HELLO, "stop": [1]},
    {"model": "m", "messages": HELLO, "top_logprobs": 21},
    {"model": "m", "messages": HELLO, "presence_penalty": -3},
])
def test_chat_bodies_outside_openais_types_and_ranges_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionCreate.model_validate(body)


def test_embedding_and_image_bodies() -> None:
    """Token arrays and strings for embeddings; WIDTHxHEIGHT or auto for image sizes."""
    assert EmbeddingCreate.model_validate({"model": "e", "input": [[1, 2], [3]]}).input == [[1, 2], [3]]
    assert ImageCreate.model_validate({"model": "i", "prompt": "p", "size": "auto"}).size == "auto"
    for bad in ({"model": "e", "input": [-1]}, {"model": "e", "input": ["a", ""]},
                {"model": "e", "input": ["x"] * 2049}):
        with pytest.raises(ValidationError):
            EmbeddingCreate.model_validate(bad)


@pytest.mark.parametrize(("loc", "body", "param"), [
    (("body", "messages", 0, "content", "function-after[_utf8(), str]"),
     {"messages": [{"content": "x"}]}, "messages[0].content"),
    (("body", "messages", 0, "role"), {"messages": [{"content": "x"}]}, "messages[0].role"),
    (("body", "stop", "list[str]", 4), {"stop": list("abcde")}, "stop[4]"),
    (("body", "tool_choice", "ToolChoice", "function"), {"tool_choice": {}}, "tool_choice.function"),
    (("body",), {}, None),
    (("query", "type"), None, "type"),
])
def test_param_names_the_field_as_the_client_wrote_it(loc: tuple[Any, ...], body: Any,
                                                      param: str | None) -> None:
    """Union-member labels in pydantic's location are skipped; keys and indexes kept."""
    assert param_of(loc, body) == param

"""The OpenAI surface these servers share: model state, chat answers, SSE streams, embeddings.

A flavour (facts module) supplies the error body and the not-found text; everything here is the
OpenAI Chat Completions/Embeddings shape the servers all follow: ``chat.completion`` with
``choices[].message`` and ``usage``; ``chat.completion.chunk`` events with ``delta`` (the role in
the first), a finish chunk, and — when ``stream_options.include_usage`` — ``"usage": null`` on each
chunk and a last chunk with ``"choices": []`` and the usage; tool calls (``tool_calls`` with
``id``, ``type: function``, ``function.name`` and JSON ``arguments``, finish ``tool_calls``) when
``tools`` are given and ``tool_choice`` is not ``none``; JSON output for ``response_format``
``json_object``/``json_schema``; embeddings as ``{"object": "list", "data": [{"object":
"embedding", "index", "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

MARKER = re.compile(r"\[\[(tokens|delay|error-after)=([0-9.]+)\]\]")
EMBEDDING_DIMENSIONS = 8


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


@dataclass
class Server:
    flavour: str
    facts: ModuleType
    models: list[dict[str, Any]]
    token_delay_s: float = 0.0
    download_bytes_per_s: float = 4_000_000.0
    fail_downloads: bool = False
    api_key: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))

    def error(self, exc: ApiError) -> JSONResponse:
        return JSONResponse(self.facts.error_body(exc.message, exc.kind, exc.status, exc.param),
                            status_code=exc.status)

    def model(self, name: Any) -> dict[str, Any]:
        for model in self.models:
            if model["id"] == name:
                return model
        if getattr(self.facts, "IGNORES_MODEL_NAME", False) and self.models:
            return self.models[0]
        raise ApiError(404, self.facts.NOT_FOUND.format(model=name),
                       getattr(self.facts, "NOT_FOUND_TYPE", "not_found_error"), "model")


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(part.get("text") if isinstance(part, dict) else part) for part in value)
    return 0


def _last_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _placeholder(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _placeholder(sub) for name, sub in props.items()}
    return {"integer": 1, "number": 1.5, "boolean": True, "array": [],
            "null": None}.get(str(kind), "text")


@dataclass
class Answer:
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    tokens: list[str]
    prompt_tokens: int
    delay_s: float
    error_after: int | None

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


def answer(server: Server, body: dict[str, Any]) -> Answer:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: Field required (a non-empty list)",
                       getattr(server.facts, "BAD_REQUEST_TYPE", "invalid_request_error"),
                       "messages")
    model = server.model(body.get("model"))
    if model["task"] != "chat":
        raise ApiError(400, getattr(server.facts, "WRONG_TASK", "The model does not support {api} "
                                    "API").format(api="Chat Completions"),
                       getattr(server.facts, "BAD_REQUEST_TYPE", "invalid_request_error"))
    model["loaded"] = True  # LM Studio loads a model on its first request
    text = _last_text(messages)
    steer = {k: float(v) for k, v in MARKER.findall(text)}
    count = int(steer.get("tokens", 5))
    prompt_tokens = sum(_words(m.get("content")) for m in messages if isinstance(m, dict)) + 1
    tools = body.get("tools")
    if isinstance(tools, list) and tools and body.get("tool_choice") != "none":
        function = tools[0].get("function", {}) if isinstance(tools[0], dict) else {}
        arguments = json.dumps(_placeholder(function.get("parameters") or {}))
        call = {"id": "chatcmpl-tool-" + secrets.token_hex(8), "type": "function",
                "function": {"name": function.get("name", "tool"), "arguments": arguments}}
        return Answer(None, [call], [arguments], prompt_tokens, steer.get("delay", 0.0), None)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt["type"] == "json_schema" \
            else {"type": "object", "properties": {"answer": {"type": "string"}}}
        content = json.dumps(_placeholder(schema or {"type": "object"}))
        tokens = [content]
    else:
        tokens = [f"{'Hello' if i == 0 else ' word'}{i if i else ''}" for i in range(count)]
        if tokens:
            tokens[-1] += "."
        content = "".join(tokens)
    return Answer(content, None, tokens, prompt_tokens, steer.get("delay", 0.0),
                  int(steer["error-after"]) if "error-after" in steer else None)


def completion(server: Server, body: dict[str, Any], ans: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": ans.content}
    if ans.tool_calls:
        message["tool_calls"] = ans.tool_calls
    return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion",
            "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": ans.finish_reason}],
            "usage": {"prompt_tokens": ans.prompt_tokens, "completion_tokens": len(ans.tokens),
                      "total_tokens": ans.prompt_tokens + len(ans.tokens)}}


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def stream(server: Server, body: dict[str, Any], ans: Answer) -> AsyncIterator[bytes]:
    options = body.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    base = {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body["model"]}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}
        if with_usage:
            data["usage"] = None
        return _event(data)

    yield chunk({"role": "assistant", "content": ""})
    if ans.tool_calls:
        call = ans.tool_calls[0]
        yield chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                     "function": {"name": call["function"]["name"],
                                                  "arguments": ""}}]})
        yield chunk({"tool_calls": [{"index": 0,
                                     "function": {"arguments": call["function"]["arguments"]}}]})
    else:
        for i, token in enumerate(ans.tokens):
            if ans.error_after is not None and i >= ans.error_after:
                yield _event(server.facts.error_body("the engine died", "InternalServerError",
                                                     500))
                return
            delay = ans.delay_s or server.token_delay_s
            if delay:
                await asyncio.sleep(delay)
            yield chunk({"content": token})
    yield chunk({}, ans.finish_reason)
    if with_usage:
        yield _event({**base, "choices": [], "usage": {
            "prompt_tokens": ans.prompt_tokens, "completion_tokens": len(ans.tokens),
            "total_tokens": ans.prompt_tokens + len(ans.tokens)}})
    yield b"data: [DONE]\n\n"


async def chat(server: Server, body: dict[str, Any]) -> Response:
    ans = answer(server, body)
    if body.get("stream"):
        return StreamingResponse(stream(server, body, ans), media_type="text/event-stream")
    return JSONResponse(completion(server, body, ans))


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [b - 128 for b in digest[:EMBEDDING_DIMENSIONS]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


async def embeddings(server: Server, body: dict[str, Any]) -> Response:
    model = server.model(body.get("model"))
    if model["task"] != "embed":
        raise ApiError(400, getattr(server.facts, "WRONG_TASK", "The model does not support {api} "
                                    "API").format(api="Embeddings"),
                       getattr(server.facts, "BAD_REQUEST_TYPE", "invalid_request_error"))
    model["loaded"] = True
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise ApiError(400, "input: a string or a non-empty list of strings is required",
                       getattr(server.facts, "BAD_REQUEST_TYPE", "invalid_request_error"), "input")
    tokens = sum(max(1, len(i.split())) for i in inputs)
    return JSONResponse({"object": "list", "model": body["model"],
                         "data": [{"object": "embedding", "index": n, "embedding": _vector(text)}
                                  for n, text in enumerate(inputs)],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

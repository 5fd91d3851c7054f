"""Anthropic's answers and event streams: the ``Dialect`` the relay is handed for
``/v1/messages``, its streaming ``EventWriter``, and Anthropic's error envelope.

Rules:
- A stream is Anthropic's event sequence, each event written with its ``event:`` name:
  ``message_start`` (the message with empty content and stop_reason null) and a ``ping``, then per
  content block ``content_block_start`` · ``content_block_delta``\\* · ``content_block_stop``
  (``thinking_delta`` for thinking, ``text_delta`` for text, ``input_json_delta`` for a tool
  call's arguments), then ``message_delta`` (stop_reason, stop_sequence, usage with the real
  input and output token counts, which Ollama reports only at the end) and ``message_stop``.
- Blocks are numbered from 0 in the order they open, and one block is open at a time: a change of
  kind (thinking → text → tool_use) closes the open one first.
- ``message_start`` carries ``input_tokens: 0``: the count is not known until the end, and the
  closing ``message_delta`` carries it (clients take the later value).
- A failure after the stream began is one ``event: error`` with Anthropic's error object; no
  ``message_stop`` follows.
- Errors: ``{"type": "error", "error": {"type", "message"}, "request_id"}``, with Anthropic's
  types for Pendra's statuses (``error_type``); an overloaded fleet (no worker free) is 529
  ``overloaded_error``, as Anthropic answers it (the SDKs retry it, honouring ``Retry-After``).
"""

from __future__ import annotations

from typing import Any

from pendra.errors import PendraError
from pendra.server import client_json, sse
from pendra.server.api.anthropic.translate import (message, message_id, stop_reason,
                                                   thinking_block, tool_input, tool_use_id, usage)

OVERLOADED_STATUS = 529
_TYPE_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error",
                   403: "permission_error", 404: "not_found_error", 409: "conflict_error",
                   413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error",
                   503: "overloaded_error", OVERLOADED_STATUS: "overloaded_error"}


def error_type(status: int, kind: str = "") -> str:
    """Anthropic's error type for a Pendra error of ``status`` (and ``kind``)."""
    if kind == "overloaded_error":
        return kind
    found = _TYPE_OF_STATUS.get(status)
    if found:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def error_status(status: int, kind: str) -> int:
    """The status Anthropic's clients get: 529 when every worker is busy, else Pendra's own."""
    return OVERLOADED_STATUS if kind == "overloaded_error" else status


def error_body(status: int, message_text: str, kind: str, param: str | None, code: str | None,
               request_id: str) -> dict[str, Any]:
    """Anthropic's error envelope (an ``ErrorShape`` for server/errors.py)."""
    body: dict[str, Any] = {"type": "error",
                            "error": {"type": error_type(status, kind), "message": message_text}}
    if request_id:
        body["request_id"] = request_id
    return body


class MessageEvents:
    """Turns one stream of internal ``chat.completion.chunk`` objects into Anthropic's events."""

    def __init__(self, model: str, msg_id: str, request_id: str) -> None:
        self.model = model
        self.msg_id = msg_id
        self.request_id = request_id
        self.started = False
        self.index = -1  # of the open block, or of the last one closed
        self.open: str | None = None  # "thinking", "text" or "tool_use"
        self.tool_calls: dict[int, int] = {}  # internal tool call index → block index
        self.finish_reason: str | None = None

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        head = {"id": self.msg_id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [sse.event({"type": "message_start", "message": head}, "message_start"),
                sse.event({"type": "ping"}, "ping")]

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [sse.event({"type": "content_block_stop", "index": self.index},
                          "content_block_stop")]

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.index += 1
        self.open = kind
        out.append(sse.event({"type": "content_block_start", "index": self.index,
                              "content_block": block}, "content_block_start"))
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse.event({"type": "content_block_delta", "index": self.index, "delta": delta},
                         "content_block_delta")

    def chunk(self, data: dict[str, Any]) -> bytes:
        out = self._start()
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            thinking = delta.get("reasoning") or delta.get("reasoning_content")
            if thinking:
                if self.open != "thinking":
                    out += self._open("thinking", thinking_block(""))
                out.append(self._delta({"type": "thinking_delta", "thinking": thinking}))
            if text := delta.get("content"):
                if self.open != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return b"".join(out)

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        fn = call.get("function") or {}
        position = call.get("index", len(self.tool_calls))
        if self.open != "tool_use" or self.tool_calls.get(position) != self.index:
            out += self._open("tool_use", {"type": "tool_use", "id": tool_use_id(call.get("id")),
                                           "name": fn.get("name", ""), "input": {}})
            self.tool_calls[position] = self.index
        arguments = fn.get("arguments")
        if isinstance(arguments, dict):
            arguments = client_json.dumps(tool_input(arguments)).decode()
        if arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return out

    def end(self, usage_counts: dict[str, int], finish_reason: str | None) -> bytes:
        out = self._start() + self._close()
        reason = stop_reason(finish_reason or self.finish_reason)
        out.append(sse.event({"type": "message_delta",
                              "delta": {"stop_reason": reason, "stop_sequence": None},
                              "usage": usage(usage_counts)}, "message_delta"))
        out.append(sse.event({"type": "message_stop"}, "message_stop"))
        return b"".join(out)

    def fail(self, exc: PendraError) -> bytes:
        body = error_body(exc.status, exc.message, exc.kind, exc.param, exc.code, self.request_id)
        return sse.event(body, "error")


class Messages:
    """The dialect of one ``/v1/messages`` request (it knows the model the client named)."""

    usage_kind = "messages"

    def __init__(self, model: str, request_id: str) -> None:
        self.model = model
        self.request_id = request_id
        self.msg_id = message_id()

    def whole(self, data: dict[str, Any]) -> dict[str, Any]:
        return message(data, self.model, self.msg_id)

    def events(self) -> MessageEvents:
        return MessageEvents(self.model, self.msg_id, self.request_id)

    async def settle(self, answer: dict[str, Any] | None) -> None:
        return None


class TokenCount:
    """The dialect of ``/v1/messages/count_tokens``: the prompt's length as Ollama counted it."""

    usage_kind = "count_tokens"

    def whole(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"input_tokens": usage(data.get("usage"))["input_tokens"]}

    def events(self) -> MessageEvents:  # never streamed: count_tokens has no stream
        raise NotImplementedError("count_tokens is never streamed")

    async def settle(self, answer: dict[str, Any] | None) -> None:
        return None


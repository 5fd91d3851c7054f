"""The Responses API's event stream, written from the internal chat chunks.

Rules:
- Every event is ``event: <type>`` plus ``data: {"type": <type>, ..., "sequence_number": n}``,
  numbered from 0 in the order sent. The stream opens with ``response.created`` and
  ``response.in_progress`` (the Response with ``status: "in_progress"`` and no output yet).
- Output items open and close in the order the model produced them, one open at a time: a
  ``reasoning`` item (``response.reasoning_summary_part.added``, ``…_text.delta`` per piece of
  thinking, ``…_text.done``, ``…_part.done``), a ``message`` (``response.content_part.added``,
  ``response.output_text.delta`` per piece, ``response.output_text.done``,
  ``response.content_part.done``), and each ``function_call`` whole (the worker sends a call
  complete: one ``response.function_call_arguments.delta`` with all of it, then ``.done``). Each
  item is announced by ``response.output_item.added`` and ended by ``response.output_item.done``.
  A ``custom_tool_call`` is sent the same way with ``response.custom_tool_call_input.delta`` and
  ``.done``.
- A stream that ended well ends with ``response.completed`` (or ``response.incomplete`` with
  ``incomplete_details.reason: "max_output_tokens"`` when cut by length) carrying the whole
  Response with its usage; the writer keeps that Response (``final``) for the dialect to store.
- A failure after the stream began sends an ``error`` event and then ``response.failed`` (the
  Response so far, ``status: "failed"``, ``error: {code, message}``), and nothing after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pendra.errors import PendraError
from pendra.server import sse
from pendra.server.api.responses import tools, translate


@dataclass
class Turn:
    """What every event of one response repeats: its id, creation time, the request's echoed
    fields and the model (the requested one until the worker names the model it served)."""

    response_id: str
    created_at: int
    echo: dict[str, Any]
    model: str
    tools: tools.ToolMap = field(default_factory=tools.ToolMap)


def error_code(exc: PendraError) -> str:
    """OpenAI's ``error.code`` for a failure inside a response."""
    if exc.status == 429:
        return "rate_limit_exceeded"
    if exc.status >= 500:
        return "server_error"
    return exc.code or "invalid_prompt"


@dataclass
class _Open:
    kind: str  # "reasoning" or "message"
    item_id: str
    index: int
    pieces: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)


class ResponseEvents:
    """The EventWriter of one streamed response."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.open: _Open | None = None
        self.calls = 0
        self.finish_reason: str | None = None
        self.final: dict[str, Any] | None = None

    # --- events ----------------------------------------------------------------------------------

    def _event(self, kind: str, **payload: Any) -> bytes:
        data = {"type": kind, **payload, "sequence_number": self.sequence}
        self.sequence += 1
        return sse.event(data, kind)

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return translate.response_object(self.turn.response_id, self.turn.created_at,
                                         self.turn.echo, self.turn.model, status=status,
                                         output=list(self.output), **extra)

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        snapshot = self._response("in_progress")
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot)]

    def _open(self, kind: str) -> list[bytes]:
        if self.open is not None and self.open.kind == kind:
            return []
        parts = self._close("completed")
        index = len(self.output)
        if kind == "reasoning":
            opened = _Open(kind, translate.new_id("rs"), index)
            item = {"id": opened.item_id, "type": "reasoning", "summary": [],
                    "status": "in_progress"}
            parts += [self._event("response.output_item.added", output_index=index, item=item),
                      self._event("response.reasoning_summary_part.added",
                                  item_id=opened.item_id, output_index=index, summary_index=0,
                                  part={"type": "summary_text", "text": ""})]
        else:
            opened = _Open(kind, translate.new_id("msg"), index)
            item = {"id": opened.item_id, "type": "message", "role": "assistant",
                    "status": "in_progress", "content": []}
            parts += [self._event("response.output_item.added", output_index=index, item=item),
                      self._event("response.content_part.added", item_id=opened.item_id,
                                  output_index=index, content_index=0,
                                  part=translate.text_part("", None))]
        self.open = opened
        return parts

    def _close(self, status: str) -> list[bytes]:
        opened, self.open = self.open, None
        if opened is None:
            return []
        text = "".join(opened.pieces)
        at = {"item_id": opened.item_id, "output_index": opened.index}
        if opened.kind == "reasoning":
            item = translate.reasoning_item(opened.item_id, text)
            parts = [self._event("response.reasoning_summary_text.done", **at, summary_index=0,
                                 text=text),
                     self._event("response.reasoning_summary_part.done", **at, summary_index=0,
                                 part={"type": "summary_text", "text": text})]
        else:
            item = translate.message_item(opened.item_id, text, status, opened.logprobs)
            parts = [self._event("response.output_text.done", **at, content_index=0, text=text,
                                 logprobs=opened.logprobs),
                     self._event("response.content_part.done", **at, content_index=0,
                                 part=item["content"][0])]
        self.output.append(item)
        parts.append(self._event("response.output_item.done", output_index=opened.index,
                                 item=item))
        return parts

    def _call(self, call: dict[str, Any]) -> list[bytes]:
        parts = self._close("completed")
        index = len(self.output)
        item = tools.output_item(translate.new_id("fc"), call, self.turn.tools)
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "custom_tool_call":
            parts += [self._event("response.output_item.added", output_index=index,
                                  item={**item, "input": "", "status": "in_progress"}),
                      self._event("response.custom_tool_call_input.delta", **at,
                                  delta=item["input"]),
                      self._event("response.custom_tool_call_input.done", **at,
                                  input=item["input"])]
        else:
            parts += [self._event("response.output_item.added", output_index=index,
                                  item={**item, "arguments": "", "status": "in_progress"}),
                      self._event("response.function_call_arguments.delta", **at,
                                  delta=item["arguments"]),
                      self._event("response.function_call_arguments.done", **at,
                                  name=item["name"], arguments=item["arguments"])]
        parts.append(self._event("response.output_item.done", output_index=index, item=item))
        self.output.append(item)
        self.calls += 1
        return parts

    # --- EventWriter -----------------------------------------------------------------------------

    def chunk(self, data: dict[str, Any]) -> bytes:
        parts = self._start()
        if isinstance(data.get("model"), str) and data["model"]:
            self.turn.model = data["model"]
        choices = data.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        delta = choice.get("delta") or {}
        if thinking := delta.get("reasoning") or delta.get("reasoning_content"):
            parts += self._open("reasoning")
            assert self.open is not None
            self.open.pieces.append(thinking)
            parts.append(self._event("response.reasoning_summary_text.delta",
                                     item_id=self.open.item_id, output_index=self.open.index,
                                     summary_index=0, delta=thinking))
        found = translate.logprobs((choice.get("logprobs") or {}).get("content"))
        if text := delta.get("content"):
            parts += self._open("message")
            assert self.open is not None
            self.open.pieces.append(text)
            self.open.logprobs.extend(found)
            parts.append(self._event("response.output_text.delta", item_id=self.open.item_id,
                                     output_index=self.open.index, content_index=0, delta=text,
                                     logprobs=found))
        elif found and self.open is not None and self.open.kind == "message":
            self.open.logprobs.extend(found)
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                parts += self._call(call)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        return b"".join(parts)

    def end(self, usage: dict[str, int], finish_reason: str | None) -> bytes:
        parts = self._start()
        status, incomplete = translate.status_of(finish_reason or self.finish_reason)
        if not self.calls and not any(i["type"] == "message" for i in self.output) and (
                self.open is None or self.open.kind != "message"):
            parts += self._open("message")  # the model said nothing: an empty message, as whole
        parts += self._close(status)
        self.final = self._response(status, incomplete=incomplete, usage_=translate.usage(
            int(usage.get("prompt_tokens", 0) or 0), int(usage.get("completion_tokens", 0) or 0)))
        kind = "response.completed" if status == "completed" else "response.incomplete"
        parts.append(self._event(kind, response=self.final))
        return b"".join(parts)

    def fail(self, exc: PendraError) -> bytes:
        parts = self._start()
        code = error_code(exc)
        parts.append(self._event("error", code=code, message=exc.message, param=exc.param))
        parts.append(self._event("response.failed", response=self._response(
            "failed", error={"code": code, "message": exc.message})))
        return b"".join(parts)

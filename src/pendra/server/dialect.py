"""How an API dialect answers: the one seam between the relay and a dialect's shapes.

Rules:
- Workers serve one internal chat (OpenAI's chat shapes, see backends/base.py). A dialect (OpenAI
  chat, Anthropic Messages, OpenAI Responses, ...) translates its request into that body at its
  own route (server/api/<dialect>) and hands the relay a ``Dialect`` for the way back; the relay
  routes, retries, meters and cancels exactly as for chat and never learns a dialect's shapes.
- ``Dialect.whole`` turns the worker's one ``chat.completion`` into the dialect's answer. A dialect
  whose whole answer is not always JSON (transcription: text, srt, vtt) also has ``response(answer,
  headers)``, which makes the HTTP response; without it the answer is sent as JSON.
- ``Dialect.events`` makes a fresh ``EventWriter`` per streamed answer: it turns each internal
  chunk into the dialect's server-sent events (``chunk``), writes the events that close a stream
  that ended well (``end``: OpenAI's ``[DONE]``, Anthropic's ``message_stop``), or the one error
  event that ends a failed stream (``fail``; never followed by ``end``'s events). A writer may
  hold state (open content blocks, sequence numbers) and emits nothing until it has something to
  say; every method returns the bytes to send (possibly empty).
- ``Dialect.settle`` runs once after a streamed or whole answer ended well, off the client's
  critical path but before the request's clean-up (e.g. keeping a stored response); it must not
  raise for a store failure the client cannot act on (log it).
- ``usage_kind`` is the kind of the request's usage row (the console breaks usage down by it).
- Errors *before* an answer starts are shaped by ``server/errors.py`` (a dialect registers its
  shape for its paths there); ``fail`` shapes only an error inside a stream.
"""

from __future__ import annotations

from typing import Any, Protocol

from pendra.errors import PendraError
from pendra.server import sse
from pendra.server.errors import error_body

# OpenAI's last event of a stream that ended well.
DONE_EVENT = sse.message("[DONE]")


class EventWriter(Protocol):
    def chunk(self, data: dict[str, Any]) -> bytes:
        """The events for one internal ``chat.completion.chunk``."""
        ...

    def end(self, usage: dict[str, int], finish_reason: str | None) -> bytes:
        """The events that close a stream that ended well (the worker's End)."""
        ...

    def fail(self, exc: PendraError) -> bytes:
        """The one error event that ends a failed stream."""
        ...


class Dialect(Protocol):
    usage_kind: str

    def whole(self, data: dict[str, Any]) -> dict[str, Any]:
        """The dialect's answer for the worker's one ``chat.completion``."""
        ...

    def events(self) -> EventWriter:
        """A writer for one streamed answer."""
        ...

    async def settle(self, answer: dict[str, Any] | None) -> None:
        """After an answer ended well (``answer`` is ``whole``'s result, None when streamed)."""
        ...


class _OpenAIEvents:
    """OpenAI's stream: each chunk as it came, ``[DONE]`` at the end, an ``{"error"}`` event on
    failure (and then no ``[DONE]``)."""

    __slots__ = ()

    def chunk(self, data: dict[str, Any]) -> bytes:
        return sse.event(data)

    def end(self, usage: dict[str, int], finish_reason: str | None) -> bytes:
        return DONE_EVENT

    def fail(self, exc: PendraError) -> bytes:
        return sse.event(error_body(exc.message, exc.kind, param=exc.param, code=exc.code))


class OpenAIPassThrough:
    """A dialect whose answer *is* the internal one: OpenAI chat, embeddings, images, audio."""

    __slots__ = ("usage_kind",)
    _events = _OpenAIEvents()

    def __init__(self, usage_kind: str) -> None:
        self.usage_kind = usage_kind

    def whole(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def events(self) -> EventWriter:
        return self._events  # stateless: one writer serves every stream

    async def settle(self, answer: dict[str, Any] | None) -> None:
        return None

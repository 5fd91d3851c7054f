"""The Responses dialect: shapes the worker's chat answer as a Response and keeps it when asked.

Rules:
- One ``ResponsesDialect`` per request: it knows the response's id, the request's echoed fields,
  the conversation that led to it and whether to store it, and holds the writer of its stream so
  ``settle`` can store what was streamed.
- ``settle`` stores the Response (and its conversation) only when the request said ``store: true``
  (OpenAI's default) and the answer ended well. A store failure is logged and the client keeps
  its answer: the answer was computed and paid for, and the client learns of the miss only when it
  retrieves or continues from that id (404). Storing is one insert: a row is whole or absent.
  It is bounded by ``STORE_TIMEOUT_S`` (a locked database delays an answer by at most that; the
  transaction is rolled back when it is given up on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from pendra.server.api.responses import translate
from pendra.server.api.responses.events import ResponseEvents, Turn
from pendra.server.dialect import EventWriter
from pendra.server.store import responses as stored
from pendra.server.store.db import Store

log = logging.getLogger(__name__)

USAGE_KIND = "responses"
# Longest a finished answer waits for its response to be stored.
STORE_TIMEOUT_S = 10.0


class ResponsesDialect:
    usage_kind = USAGE_KIND

    def __init__(self, turn: Turn, *, conversation: list[dict[str, Any]], store: Store | None,
                 key_id: str, retention_s: float) -> None:
        self.turn = turn
        self.conversation = conversation  # stored input items: history, then this input
        self.store = store  # None: store false, keep nothing
        self.key_id = key_id
        self.retention = timedelta(seconds=retention_s)
        self.writer: ResponseEvents | None = None

    def whole(self, data: dict[str, Any]) -> dict[str, Any]:
        output, finish, chat_usage = translate.output_of(data, self.turn.tools)
        status, incomplete = translate.status_of(finish)
        if isinstance(data.get("model"), str) and data["model"]:
            self.turn.model = data["model"]
        return translate.response_object(
            self.turn.response_id, self.turn.created_at, self.turn.echo, self.turn.model,
            status=status, output=output, incomplete=incomplete,
            usage_=translate.usage(int(chat_usage.get("prompt_tokens", 0) or 0),
                                   int(chat_usage.get("completion_tokens", 0) or 0)))

    def events(self) -> EventWriter:
        self.writer = ResponseEvents(self.turn)
        return self.writer

    async def settle(self, answer: dict[str, Any] | None) -> None:
        response = answer if answer is not None else (self.writer.final if self.writer else None)
        if self.store is None or response is None:
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                await self.store.change(lambda session: stored.keep_response(
                    session, response_id=self.turn.response_id, key_id=self.key_id,
                    model=self.turn.model, input_items=self.conversation, response=response,
                    retention=self.retention))
        except Exception as exc:  # noqa: BLE001 - any store failure: the answer stands, logged
            log.warning("response %s was answered but could not be stored (%.0f ms): %s",
                        self.turn.response_id, (time.monotonic() - started) * 1000, exc)

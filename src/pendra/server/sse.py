"""Server-sent events: the one encoding of every event stream the control plane sends.

Rules:
- An event is an optional ``event: <name>`` line, one ``data:`` line per line of its text, then a
  blank line. JSON data is written compact on one line (``event``), so it is one ``data:`` line,
  by the one client encoder (client_json.py).
- A stream that can go quiet goes through ``with_keepalive``: a comment line (``: keepalive``) at
  least every ``KEEPALIVE_S`` keeps proxies from closing an idle connection and is how a client
  that vanished is noticed (the write fails). Comment lines are ignored by every SSE client.
- Every event stream carries ``HEADERS``: never cached, never buffered by a proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from pendra.server import client_json

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
# Longest quiet on a stream before a comment line: well under the 60 s idle timeout of common
# proxies (nginx's proxy_read_timeout), and rare enough to cost nothing.
KEEPALIVE_S = 15.0
KEEPALIVE = b": keepalive\n\n"


def message(text: str, name: str | None = None) -> bytes:
    """One event carrying ``text`` (each of its lines a ``data:`` line)."""
    head = f"event: {name}\n" if name else ""
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"{head}{lines}\n".encode()


def event(data: Any, name: str | None = None) -> bytes:
    """One event carrying ``data`` as compact JSON."""
    payload = client_json.dumps(data)
    if name:
        return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"
    return b"data: " + payload + b"\n\n"


def retry(ms: int) -> bytes:
    """Tells EventSource how long to wait before reconnecting once the stream ends."""
    return f"retry: {ms}\n\n".encode()


async def with_keepalive(source: AsyncIterator[bytes],
                         interval_s: float | None = None) -> AsyncIterator[bytes]:
    """``source``'s items, with ``KEEPALIVE`` whenever it is quiet for ``interval_s``
    (``KEEPALIVE_S`` by default); ``source`` is closed when this generator is."""
    interval = KEEPALIVE_S if interval_s is None else interval_s
    iterator = aiter(source)
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield KEEPALIVE
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


def response(source: AsyncIterator[bytes]) -> StreamingResponse:
    """The streaming response for ``source``'s events, with keep-alive comments."""
    return StreamingResponse(with_keepalive(source), media_type=MEDIA_TYPE, headers=HEADERS)

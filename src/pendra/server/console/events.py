"""Server-sent events for the console's live parts.

- ``/console/events/installs/{op_id}``: one install's progress, relayed from ``Installs.watch``:
  ``progress`` events, then one ``end`` event, then the stream closes. Each carries the same shape
  the page rendered the install with (``views.install_view``), so the page script only copies
  fields into place.
- ``/console/events/fleet``: a ``changed`` event whenever the hub's version moves (a worker
  connected, left, or sent a new inventory); the Workers and Models pages then re-fetch themselves.

Rules: both need a console session (401 otherwise, never a redirect: EventSource cannot follow one
to a sign-in page usefully). Every wait is bounded: a comment line goes out at least every
``KEEPALIVE_S`` (which is also how a vanished client is noticed), and the fleet stream ends after
``FLEET_STREAM_MAX_S`` — EventSource reconnects on its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from pendra.errors import Unauthorized
from pendra.server.console.views import install_view
from pendra.server.deps import CurrentSession, HubDep, InstallsDep

router = APIRouter(prefix="/console/events", include_in_schema=False)

KEEPALIVE_S = 15.0
FLEET_STREAM_MAX_S = 300.0
# Tells EventSource how long to wait before reconnecting after the stream ends.
RETRY_MS = 2000
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _signed_in(session: CurrentSession) -> None:
    if session is None:
        raise Unauthorized("sign in to the console first")


async def _with_keepalive(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``source``'s items, with a comment line whenever it is quiet for KEEPALIVE_S."""
    iterator = aiter(source)
    pending: asyncio.Task[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                yield b": keepalive\n\n"
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
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


@router.get("/installs/{op_id}")
async def install_events(op_id: str, session: CurrentSession,
                         installs: InstallsDep) -> StreamingResponse:
    _signed_in(session)
    first = await installs.get(op_id)  # NotFound before the stream starts

    async def events() -> AsyncIterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        async for snapshot in installs.watch(first.id):
            yield sse("end" if snapshot.done else "progress", install_view(snapshot.to_dict()))

    return StreamingResponse(_with_keepalive(events()), media_type="text/event-stream",
                             headers=SSE_HEADERS)


@router.get("/fleet")
async def fleet_events(session: CurrentSession, hub: HubDep) -> StreamingResponse:
    _signed_in(session)

    async def events() -> AsyncIterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        version = hub.version
        yield sse("hello", {"version": version})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLEET_STREAM_MAX_S
        while (left := deadline - loop.time()) > 0:
            await hub.wait_changed(version, timeout=min(KEEPALIVE_S, left))
            if hub.version != version:
                version = hub.version
                yield sse("changed", {"version": version})
            else:
                yield b": keepalive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

"""Server-sent events for the console's live parts.

- ``/console/events/installs/{op_id}``: one install's progress, relayed from ``Installs.watch``:
  ``progress`` events, then one ``end`` event, then the stream closes. Each carries the same shape
  the page rendered the install with (``views.install_view``), so the page script only copies
  fields into place.
- ``/console/events/fleet``: a ``changed`` event whenever the hub's version moves (a worker
  connected, left, or sent a new inventory); the Workers and Models pages then re-fetch themselves.

Rules: both need a console session (401 otherwise, never a redirect: EventSource cannot follow one
to a sign-in page usefully). Every wait is bounded: both streams go through ``sse.response`` (a
comment line at least every ``sse.KEEPALIVE_S``, which is also how a vanished client is noticed),
and the fleet stream ends after ``FLEET_STREAM_MAX_S`` — EventSource reconnects on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from pendra.errors import Unauthorized
from pendra.server import sse
from pendra.server.console.views import install_view
from pendra.server.deps import CurrentSession, HubDep, InstallsDep

router = APIRouter(prefix="/console/events", include_in_schema=False)

FLEET_STREAM_MAX_S = 300.0
# Tells EventSource how long to wait before reconnecting after the stream ends.
RETRY_MS = 2000


def _signed_in(session: CurrentSession) -> None:
    if session is None:
        raise Unauthorized("sign in to the console first")


@router.get("/installs/{op_id}")
async def install_events(op_id: str, session: CurrentSession,
                         installs: InstallsDep) -> StreamingResponse:
    _signed_in(session)
    first = await installs.get(op_id)  # NotFound before the stream starts

    async def events() -> AsyncIterator[bytes]:
        yield sse.retry(RETRY_MS)
        async for snapshot in installs.watch(first.id):
            yield sse.event(install_view(snapshot.to_dict()),
                            "end" if snapshot.done else "progress")

    return sse.response(events())


@router.get("/fleet")
async def fleet_events(session: CurrentSession, hub: HubDep) -> StreamingResponse:
    _signed_in(session)

    async def events() -> AsyncIterator[bytes]:
        yield sse.retry(RETRY_MS)
        version = hub.version
        yield sse.event({"version": version}, "hello")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLEET_STREAM_MAX_S
        while (left := deadline - loop.time()) > 0:
            await hub.wait_changed(version, timeout=left)
            if hub.version != version:
                version = hub.version
                yield sse.event({"version": version}, "changed")

    return sse.response(events())

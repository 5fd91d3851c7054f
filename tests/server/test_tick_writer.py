"""The HTTP edge's one-write-per-turn rule (connections.py ``_TickWriter``): what one response
writes in one turn of the event loop reaches the transport as one write at the end of that turn,
in order; nothing waits longer; closing writes what is pending first. Served over a real socket,
a response still arrives whole (tests/server/test_connections.py covers the edge end to end)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from pendra.server.connections import EdgeLimits, _TickWriter
from pendra.server.serve import serving


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def writelines(self, pieces: list[bytes]) -> None:
        self.write(b"".join(pieces))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_writes_of_one_turn_leave_as_one_write_in_order() -> None:
    transport = FakeTransport()
    writer = _TickWriter(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    writer.write(b"hello")
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nhello"]
    writer.write(b" again")  # a later turn: a write of its own
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nhello", b" again"]


async def test_close_writes_what_is_pending_first() -> None:
    transport = FakeTransport()
    writer = _TickWriter(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.write(b"head")
    writer.write(b"body")
    writer.close()
    assert transport.writes == [b"headbody"] and transport.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left and writes nothing
    assert transport.writes == [b"headbody"]
    assert writer.is_closing()


async def test_nothing_is_written_into_a_closing_transport() -> None:
    transport = FakeTransport()
    writer = _TickWriter(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.write(b"late")
    transport.closed = True  # the peer went away within the turn
    await asyncio.sleep(0)
    assert transport.writes == []


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b"x" * (int(scope["query_string"] or b"5"))
    stream = scope["path"] == "/stream"
    headers = [] if stream else [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if stream:
        for _ in range(3):
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("size", [5, 3 * 1024 * 1024])
async def test_answers_arrive_whole_through_the_edge(size: int) -> None:
    async with serving(_app, "127.0.0.1", 0, limits=EdgeLimits()) as running:  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=running.base_url) as client:
            for _ in range(3):  # keep-alive: every response on the same connection
                answer = await client.get(f"/?{size}")
                assert answer.status_code == 200 and answer.content == b"x" * size
            streamed = await client.get(f"/stream?{size}")
            assert streamed.content == b"x" * size * 3

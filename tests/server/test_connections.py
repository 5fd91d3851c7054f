"""The HTTP edge on real sockets: the header deadline and the connection cap (server/connections.py)."""

from __future__ import annotations

import asyncio
import logging
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from api_fixtures import Api, running_api
from pendra.server.connections import EdgeLimits
from pendra.server.flood_log import FloodLog
from polling import eventually
from suite_env import WAIT

# Short bounds so each test takes a second or two; the defaults are 10 s and 2048.
DEADLINE_S = 1.0
# Every wait below is a ceiling, never a timing that is asserted.
CEILING_S = 15 * WAIT


def _addr(api: Api) -> tuple[str, int]:
    host, port = api.base_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded by CEILING_S)."""
    async with asyncio.timeout(CEILING_S):
        return await reader.read()


async def _trickle(writer: asyncio.StreamWriter, data: bytes, gap_s: float) -> None:
    """Send ``data`` one byte at a time, ``gap_s`` apart, until done or the server hangs up."""
    try:
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            await asyncio.sleep(gap_s)
    except ConnectionError:
        pass


def _status_and_body(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@asynccontextmanager
async def _slow_client(api: Api, data: bytes, gap_s: float = 0.25) -> AsyncIterator[
        tuple[asyncio.StreamReader, asyncio.Task[None]]]:
    reader, writer = await asyncio.open_connection(*_addr(api))
    sender = asyncio.create_task(_trickle(writer, data, gap_s))
    try:
        yield reader, sender
    finally:
        sender.cancel()
        writer.close()


SLOW_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: pendra\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"


async def test_headers_trickled_byte_by_byte_get_408_and_the_connection_closes(
        tmp_path: Path) -> None:
    """A client sending its headers a byte at a time is answered 408 and cut off at the deadline,
    not held while it keeps trickling."""
    async with running_api(tmp_path, header_timeout_s=DEADLINE_S) as api:
        async with _slow_client(api, SLOW_REQUEST) as (reader, _):  # ~1 minute of trickle
            raw = await _read_all(reader)
    status, headers, body = _status_and_body(raw)
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["type"] == "request_timeout"


async def test_a_connection_that_sends_nothing_is_closed(tmp_path: Path) -> None:
    """A connection that never sends a byte is closed at the deadline, without a response."""
    async with running_api(tmp_path, header_timeout_s=DEADLINE_S) as api:
        reader, writer = await asyncio.open_connection(*_addr(api))
        try:
            assert await _read_all(reader) == b""
        finally:
            writer.close()


async def test_keep_alive_deadline_starts_at_each_requests_first_byte(tmp_path: Path) -> None:
    """On a kept-alive connection, an idle pause longer than the deadline is fine (the next request's
    deadline starts at its first byte), and a later request trickled too slowly still gets 408."""
    request = b"GET /healthz HTTP/1.1\r\nHost: pendra\r\n\r\n"
    async with running_api(tmp_path, header_timeout_s=DEADLINE_S) as api:
        reader, writer = await asyncio.open_connection(*_addr(api))
        try:
            for pause_s in (0, DEADLINE_S * 1.5):  # longer than the deadline, shorter than
                await asyncio.sleep(pause_s)         # uvicorn's 5 s keep-alive
                writer.write(request)
                async with asyncio.timeout(CEILING_S):
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200")
                    await reader.readuntil(b"}")  # {"status":"ok"}
            sender = asyncio.create_task(_trickle(writer, SLOW_REQUEST, 0.25))
            raw = await _read_all(reader)
            sender.cancel()
        finally:
            writer.close()
    assert _status_and_body(raw)[0] == 408


async def test_many_slow_clients_are_all_dropped_while_the_server_keeps_answering(
        tmp_path: Path) -> None:
    """200 clients trickling headers are all dropped at the deadline, and a normal request is
    answered meanwhile."""
    async with running_api(tmp_path, header_timeout_s=DEADLINE_S) as api:
        async with asyncio.TaskGroup() as tg:
            clients = [await asyncio.open_connection(*_addr(api)) for _ in range(200)]
            senders = [tg.create_task(_trickle(w, SLOW_REQUEST, 0.5)) for _, w in clients]
            async with httpx.AsyncClient(base_url=api.base_url, timeout=CEILING_S) as http:
                assert (await http.get("/healthz")).status_code == 200
            answers = await asyncio.gather(*(_read_all(r) for r, _ in clients))
            for sender in senders:
                sender.cancel()
        for _, writer in clients:
            writer.close()
    assert all(_status_and_body(a)[0] == 408 for a in answers)


async def test_connection_over_the_cap_gets_503_json_with_retry_after(tmp_path: Path) -> None:
    """With the cap reached, one more connection (HTTP or a WebSocket upgrade) gets 503
    overloaded_error with Retry-After and is closed; once the others close, requests work again."""
    async with running_api(tmp_path, header_timeout_s=10 * WAIT, max_connections=3) as api:
        held = [await asyncio.open_connection(*_addr(api)) for _ in range(3)]
        try:
            async with httpx.AsyncClient(base_url=api.base_url, timeout=CEILING_S) as http:
                refused = await http.get("/healthz")
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.headers["connection"] == "close"
            assert refused.json()["error"]["type"] == "overloaded_error"
            with pytest.raises(InvalidStatus) as upgrade:
                async with connect(api.ws_url, open_timeout=CEILING_S):
                    pass
            assert upgrade.value.response.status_code == 503
        finally:
            for _, writer in held:
                writer.close()
                await writer.wait_closed()

        async def healthy() -> bool:
            async with httpx.AsyncClient(base_url=api.base_url, timeout=CEILING_S) as http:
                return (await http.get("/healthz")).status_code == 200

        await eventually(healthy, timeout_s=15, interval_s=0.05)

def test_edge_log_says_one_line_per_period_not_one_per_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    """A flood of refusals logs one summary line with a count, not a line per connection."""
    tally = FloodLog("refused", logging.getLogger("pendra.server.connections"))
    with caplog.at_level("WARNING", logger="pendra.server.connections"):
        for i in range(500):
            tally.add(f"10.0.0.1:{i}")
    assert len(caplog.records) == 1
    assert tally.count == 499


def test_limits_come_from_settings() -> None:
    """header_timeout and max_connections reach the edge through ServerSettings."""
    from pendra import config as cfg
    from pendra.home import Home

    settings = cfg.load_server(Home(Path("/nonexistent")),
                               {"HEADER_TIMEOUT": "2.5", "MAX_CONNECTIONS": "100"})
    assert EdgeLimits.of(settings) == EdgeLimits(header_timeout_s=2.5, max_connections=100)

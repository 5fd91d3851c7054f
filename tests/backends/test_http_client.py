"""The worker's HTTP/1.1 client (backends/http.py) against a real socket server whose every byte
the test chooses: keep-alive reuse, the three ways a body ends, connections that must not be
reused, timeouts, the pool bound, and cancellation closing the connection (which is what aborts
the work on the backend)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from pendra.backends.http import (ConnectError, HttpClient, PoolTimeout, ReadError, ReadTimeout,
                                  RemoteProtocolError, Timeouts)

FAST = Timeouts(connect=2.0, read=2.0, write=2.0, pool=2.0)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """A TCP server that reads each request's head and body and lets ``handler`` answer."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_peer = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                await self.handler(reader, writer, number)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_peer.set()
        finally:
            writer.close()


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[Server, str]]:
    state = Server(handler)
    listener = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        listener.close()


def answer(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body), b"".join(h + b"\r\n" for h in extra), body)


async def test_sequential_requests_share_one_kept_alive_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(answer(b'{"n":%d}' % n))

    async with server(handler) as (state, url):
        client = HttpClient(url, max_connections=4, timeouts=FAST)
        for _ in range(3):
            response = await client.send("POST", "/api/chat", b'{"a":1}')
            async with response:
                assert response.status_code == 200
                assert await response.read() == b'{"n":1}'
        await client.aclose()
    assert state.connections == 1
    assert state.requests[0].startswith(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"content-length: 7\r\n" in state.requests[0].lower()
    assert state.requests[0].endswith(b'\r\n\r\n{"a":1}')


@pytest.mark.parametrize("how", ["chunked", "until-close"])
async def test_a_body_may_be_chunked_or_end_with_the_connection(how: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if how == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for line in (b'{"a":1}\n', b'{"b":2}\n'):
                writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b'{"a":1}\n{"b":2}\n')
            await writer.drain()
            writer.close()

    async with server(handler) as (state, url):
        client = HttpClient(url, max_connections=4, timeouts=FAST)
        for _ in range(2):
            response = await client.send("GET", "/api/tags")
            async with response:
                pieces = [piece async for piece in response.aiter_bytes()]
            assert b"".join(pieces) == b'{"a":1}\n{"b":2}\n'
        await client.aclose()
    assert state.connections == (1 if how == "chunked" else 2)  # a closed one is never reused


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(answer(b"{}"))
        await writer.drain()
        writer.close()  # without saying Connection: close

    async with server(handler) as (state, url):
        client = HttpClient(url, max_connections=4, timeouts=FAST)
        for _ in range(3):
            async with await client.send("GET", "/") as response:
                assert await response.read() == b"{}"
            await asyncio.sleep(0.05)  # the close reaches the client while the connection is idle
        await client.aclose()
    assert state.connections == 3


async def test_an_answer_cut_short_is_a_read_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial")
        await writer.drain()
        writer.close()

    async with server(handler) as (_, url):
        client = HttpClient(url, max_connections=4, timeouts=FAST)
        response = await client.send("GET", "/")
        with pytest.raises(ReadError):
            await response.read()
        await response.aclose()
        await client.aclose()


async def test_a_malformed_answer_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")

    async with server(handler) as (_, url):
        client = HttpClient(url, max_connections=4, timeouts=FAST)
        with pytest.raises(RemoteProtocolError):
            await client.send("GET", "/")
        await client.aclose()


async def test_silence_is_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(5)

    async with server(handler) as (_, url):
        client = HttpClient(url, max_connections=4,
                            timeouts=Timeouts(connect=2.0, read=0.1, write=2.0, pool=2.0))
        with pytest.raises(ReadTimeout):
            await client.send("GET", "/")
        await client.aclose()


async def test_the_pool_bounds_connections_and_times_out_waiting_for_one() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await release.wait()
        writer.write(answer(b"{}"))

    async with server(handler) as (state, url):
        client = HttpClient(url, max_connections=2,
                            timeouts=Timeouts(connect=2.0, read=5.0, write=2.0, pool=0.2))
        first = [asyncio.create_task(client.send("GET", "/")) for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(PoolTimeout):
            await client.send("GET", "/")
        release.set()
        for task in first:
            async with await task as response:
                await response.read()
        async with await client.send("GET", "/") as response:  # a slot is free again
            assert await response.read() == b"{}"
        await client.aclose()
    assert state.connections == 2


async def test_a_cancelled_request_closes_its_connection() -> None:
    """Cancelling mid-answer closes the socket: the server sees the peer go (how Ollama learns
    that a request was cancelled), and the half-read connection is never reused."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await reader.read(1)  # returns b"" once the client has closed
        raise ConnectionResetError

    async with server(handler) as (state, url):
        client = HttpClient(url, max_connections=1, timeouts=FAST)

        async def consume() -> None:
            async with await client.send("POST", "/api/chat", b"{}") as response:
                assert await response.next_piece() == b"first"
                await response.next_piece()  # waits for more: cancelled here

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(state.closed_by_peer.wait(), 2)
        await client.aclose()


async def test_nothing_listening_and_unusable_urls_are_connect_errors() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    for url in (f"http://127.0.0.1:{port}", "localhost:11434", "http://x:99999"):
        client = HttpClient(url, max_connections=1, timeouts=FAST)
        with pytest.raises(ConnectError):
            await client.send("GET", "/")
        await client.aclose()


def test_multipart_form_is_read_back_by_an_independent_parser() -> None:
    """What ``multipart_form`` builds, python-multipart (the parser Starlette uses) reads back
    field by field, file bytes intact, a quote in a file name escaped rather than breaking out."""
    from python_multipart.multipart import parse_options_header, MultipartParser

    from pendra.backends.http import multipart_form

    audio = bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n"
    body, content_type = multipart_form({"model": "whisper", "language": "en"},
                                        {"file": ('say "hi".wav', audio, "audio/wav")})
    _, params = parse_options_header(content_type)
    parts: list[dict[str, bytes]] = []
    headers: dict[bytes, bytes] = {}
    field: dict[str, bytearray] = {"name": bytearray(), "value": bytearray(), "data": bytearray()}

    def on_part_begin() -> None:
        headers.clear()
        field["data"] = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        field["value"] += data[start:end]

    def on_header_end() -> None:
        headers[bytes(field["name"]).lower()] = bytes(field["value"])
        field["name"], field["value"] = bytearray(), bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        field["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append({"disposition": headers[b"content-disposition"],
                      "type": headers.get(b"content-type", b""), "data": bytes(field["data"])})

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_part_end": on_part_end})
    parser.write(body)
    parser.finalize()
    assert [p["data"] for p in parts] == [b"whisper", b"en", audio]
    assert parts[2]["type"] == b"audio/wav"
    assert parts[2]["disposition"] == b'form-data; name="file"; filename="say \\"hi\\".wav"'

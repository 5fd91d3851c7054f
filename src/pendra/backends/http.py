"""A small HTTP/1.1 client for one origin (a backend's API): a keep-alive pool over asyncio
protocols, responses parsed by httptools (llhttp, the C parser uvicorn uses).

Why not httpx: per call, httpx/httpcore/anyio/h11 cost more CPU than the rest of a relayed request
on the worker put together (the chat profile in docs/performance.md), and ~11 MiB of a worker's
resident memory. A backend's API needs only what is here: requests with a body of known length
(JSON, or a multipart form built by ``multipart_form``), answers with a ``Content-Length``,
chunked or read-until-close body.

Rules:
- One origin per client (``http`` or ``https``, host, port, optional path prefix). At most
  ``max_connections`` connections are open at once (a request beyond that waits for one, up to the
  pool timeout); each is kept alive after a response read to its end unless the server says
  otherwise (``Connection: close``, HTTP/1.0), and idle ones are reused newest first. One the
  server closed while idle is dropped, never reused.
- Every connection has ``TCP_NODELAY``; a request's head and body go out in one write.
- ``Timeouts``: connect, write (the request reaching the socket's buffer), pool (waiting for a free
  connection) and read (each wait for more of the answer); ``None`` is unbounded. Each failure
  raises an ``HttpError`` subclass named after what happened (``ConnectError``, ``ConnectTimeout``,
  ``WriteTimeout``, ``PoolTimeout``, ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``).
- A response not read to its end (the caller stopped early, failed or was cancelled) closes its
  connection: a half-read connection is never reused, and closing it is what aborts the work on
  the server. Close every response (``async with`` or ``aclose``); its connection slot is given
  back exactly once.
- Reading is flow-controlled: the socket is paused while ``READ_BUFFER_BYTES`` of body wait unread.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import httptools

# Body bytes read from the socket but not yet by the caller before reading pauses.
READ_BUFFER_BYTES = 256 * 1024


def multipart_form(fields: dict[str, str],
                   files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, bytes]:
    """A ``multipart/form-data`` body (RFC 7578) and its content type: text ``fields`` and
    ``files`` as (file name, content, media type). Names and file names are quoted with their
    quotes and line breaks escaped; the boundary is random and checked against the content."""
    boundary = b"pendra-" + secrets.token_hex(16).encode()
    parts = []

    def quoted(text: str) -> bytes:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace(
            "\n", " ").encode()

    for name, value in fields.items():
        parts.append(b'Content-Disposition: form-data; name="%s"\r\n\r\n%s' % (
            quoted(name), value.encode()))
    for name, (filename, content, media_type) in files.items():
        parts.append(b'Content-Disposition: form-data; name="%s"; filename="%s"\r\n'
                     b"Content-Type: %s\r\n\r\n%s" % (quoted(name), quoted(filename),
                                                       quoted(media_type),
                                                       content))
    if any(boundary in part for part in parts):  # 2^-128, but never a corrupt body
        return multipart_form(fields, files)
    body = b"".join(b"--%s\r\n%s\r\n" % (boundary, part) for part in parts)
    return body + b"--%s--\r\n" % boundary, b"multipart/form-data; boundary=" + boundary


class HttpError(Exception):
    """A transport failure: the request did not get a complete answer."""


class ConnectError(HttpError):
    pass


class ConnectTimeout(HttpError):
    pass


class WriteTimeout(HttpError):
    pass


class PoolTimeout(HttpError):
    pass


class ReadTimeout(HttpError):
    pass


class ReadError(HttpError):
    pass


class RemoteProtocolError(HttpError):
    pass


@dataclass(frozen=True)
class Timeouts:
    """Seconds for each wait of a request (see the module rules); None is unbounded."""

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None


class _Connection(asyncio.Protocol):
    """One socket; at most one request on it at a time. Parser callbacks fill the current
    response's state and wake whoever waits for it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: HttpError | None = None
        self.body: list[bytes] = []
        self.buffered = 0
        self._until_close = False
        self._paused = False

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's too)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._parser is not None and not self.complete and self.error is None:
            if self._until_close:
                self.complete = True  # a body without a length ends when the connection does
                self.keep_alive = False
            else:
                self.error = ReadError("the server closed the connection before the answer ended"
                                       + (f" ({exc})" if exc else ""))
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self.complete:
            self.abort()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = RemoteProtocolError(f"the server sent an invalid HTTP answer ({exc})")
            self.abort()
            self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        self.headers_done = True
        self._until_close = ("content-length" not in self.headers
                             and "chunked" not in self.headers.get("transfer-encoding", "").lower())
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > READ_BUFFER_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        assert self._parser is not None
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # --- used by the client and its responses ------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until the parser has something new (or the connection ended); ReadTimeout past
        ``timeout``."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError as exc:
            raise ReadTimeout(f"no answer for {timeout:g}s") from exc
        finally:
            self._waiter = None

    def start(self, request: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)

    async def drained(self, timeout: float | None) -> None:
        if self._drained is None or self._drained.done():
            return
        try:
            async with asyncio.timeout(timeout):
                await self._drained
        except TimeoutError as exc:
            raise WriteTimeout(f"the request was not sent within {timeout:g}s") from exc

    def take(self) -> bytes:
        """The body bytes read so far (and reading resumes)."""
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self._paused and self.transport is not None and not self.lost:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.lost and self.error is None

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """An answer whose head has arrived; its body is read with ``aiter_bytes`` or ``read``."""

    def __init__(self, client: HttpClient, connection: _Connection, read_timeout: float | None):
        self._client = client
        self._connection: _Connection | None = connection
        self._read_timeout = read_timeout
        self.status_code = connection.status
        self.headers = connection.headers

    async def next_piece(self) -> bytes:
        """The body's next bytes as they arrive; ``b""`` once it has ended."""
        connection = self._connection
        while connection is not None:
            if connection.body:
                return connection.take()
            if connection.error is not None:
                raise connection.error
            if connection.complete:
                return b""
            if connection.lost:
                raise ReadError("the connection closed before the answer ended")
            await connection.wait(self._read_timeout)
        return b""

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as it arrives."""
        while piece := await self.next_piece():
            yield piece

    async def read(self) -> bytes:
        """The whole body."""
        pieces = []
        while piece := await self.next_piece():
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._client._release(connection)

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


class HttpClient:
    """Requests to one origin through a pool of kept-alive connections (see the module rules)."""

    def __init__(self, base_url: str, *, max_connections: int, timeouts: Timeouts) -> None:
        parts = urlsplit(base_url)
        # A URL this client cannot use fails each request (ConnectError), as an unreachable one does.
        self._unusable = "" if parts.scheme in ("http", "https") and parts.hostname else \
            f"not an http(s) URL: {base_url[:200]!r}"
        self.timeouts = timeouts
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        try:
            self._port = parts.port or (443 if self._tls else 80)
        except ValueError:  # a port out of range
            self._port, self._unusable = 0, f"not a valid port in {base_url[:200]!r}"
        self._prefix = parts.path.rstrip("/")
        default_port = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = (host if default_port else f"{host}:{self._port}").encode("ascii",
                                                                                    "replace")
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def send(self, method: str, path: str, body: bytes | None = None, *,
                   timeouts: Timeouts | None = None,
                   content_type: bytes = b"application/json") -> Response:
        """Send a request and wait for the head of its answer; the caller must close the
        response. ``body`` is sent as ``content_type`` (JSON unless said otherwise)."""
        timeouts = timeouts or self.timeouts
        if self._closed or self._unusable:
            raise ConnectError(self._unusable or "the client is closed")
        try:
            async with asyncio.timeout(timeouts.pool):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise PoolTimeout(f"no free connection within {timeouts.pool:g}s") from exc
        connection: _Connection | None = None
        try:
            connection = await self._connection(timeouts.connect)
            connection.start(self._head(method, path, body, content_type))
            await connection.drained(timeouts.write)
            while not connection.headers_done:
                if connection.error is not None:
                    raise connection.error
                if connection.lost:
                    raise ReadError("the server closed the connection without an answer")
                await connection.wait(timeouts.read)
        except BaseException:
            if connection is not None:
                connection.abort()
            self._slots.release()
            raise
        return Response(self, connection, timeouts.read)

    def _head(self, method: str, path: str, body: bytes | None,
              content_type: bytes = b"application/json") -> bytes:
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n" % (
            method.encode("ascii"), (self._prefix + path).encode("ascii"), self._host_header)
        if body is None:
            return head + b"\r\n"
        return head + b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            content_type, len(body), body)

    async def _connection(self, timeout: float | None) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost:
                return connection
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl_context())
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection within {timeout:g}s") from exc
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        connection.transport = transport  # uvloop may call connection_made only after returning
        return connection

    def _ssl_context(self) -> object | None:
        if not self._tls:
            return None
        import ssl  # only an https origin needs it

        return ssl.create_default_context()

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and not connection.body and not self._closed:
            connection._parser = None
            self._idle.append(connection)
        else:
            connection.abort()
        self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.abort()

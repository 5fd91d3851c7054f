"""The HTTP edge: a deadline for a request's headers and a cap on open connections.

uvicorn holds a connection for as long as its peer trickles header bytes, and accepts connections
until the process runs out of descriptors. A stranger gets a small budget here, before any of
Pendra's code runs:

- **Header deadline.** A request's headers must be complete within ``header_timeout_s`` (default
  10 s), counted from the connection's opening for its first request and from the first byte of
  each later request on a keep-alive connection. When it passes, a connection that has started a
  request gets ``408`` and is closed; an idle one (not a byte sent) is just closed. If a response
  is still being written on that connection (pipelining), nothing is written into it: the
  connection closes once that response is done. The body has no deadline here (the app reads it,
  bounded by ``max_body_bytes``).
- **Connection cap.** At most ``max_connections`` connections are open at once, HTTP and
  WebSocket alike (every connected worker holds one; the default leaves room for a large fleet).
  A connection over the cap is still accepted, so it can be told why: once its headers arrive it
  gets ``503`` in the API's error shape (``overloaded_error``) with ``Retry-After`` and is closed;
  a WebSocket upgrade over the cap gets the same 503 instead of the upgrade. It counts towards the
  cap while it is open, and the header deadline bounds how long that is.
- Refusals and timeouts are logged as one summary line per kind at most a minute
  (``flood_log.FloodLog``), never one line per connection (a flood must not flood the log).
- **One write per response tick.** What a response writes within one turn of the event loop
  goes to the socket as one write at the end of that turn (``_TickWriter``): uvicorn writes a
  response's head and its body separately, and on a small answer each write is a system call and
  a TCP segment of its own (the chat profile's largest block on the control plane's side). Nothing
  waits longer than the turn it was written in; closing writes what is pending first.

It works by subclassing uvicorn's httptools protocol (``Config(http=edge_protocol(limits))``) and
relies on these hooks of ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`` (uvicorn
0.29–0.54 at least): ``connection_made``/``connection_lost``; the parser callbacks
``on_message_begin``/``on_headers_complete``; ``_should_upgrade`` and
``_unsupported_upgrade_warning`` (to refuse an upgrade over the cap quietly); the attributes
``app`` (the ASGI app a request is handed to), ``connections``, ``cycle``, ``transport``, ``loop``,
``client`` and ``server_state.default_headers``. tests/server/test_connections.py exercises each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pendra.config import ServerSettings
from pendra.server.errors import error_body
from pendra.server.flood_log import FloodLog

log = logging.getLogger(__name__)

# Enough for a slow link to send a few KB of headers; a browser or SDK sends them in one packet.
DEFAULT_HEADER_TIMEOUT_S = 10.0
# Every connected worker's WebSocket counts too: room for a large fleet plus its clients, well
# under the descriptor limit of a typical service (raised to meet it at start-up when allowed).
DEFAULT_MAX_CONNECTIONS = 2048
# What an over-the-cap client is told to wait: connections turn over within seconds.
OVERLOADED_RETRY_AFTER_S = 2
# Descriptors the process needs besides client connections (database, workers' backends, logs).
SPARE_DESCRIPTORS = 64


@dataclass(frozen=True)
class EdgeLimits:
    """What one listening server allows a connection before the app sees it."""

    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def of(cls, settings: ServerSettings) -> EdgeLimits:
        return cls(header_timeout_s=settings.header_timeout_s,
                   max_connections=settings.max_connections)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown"


def _error_json(message: str, kind: str) -> bytes:
    return json.dumps(error_body(message, kind)).encode()


def _overloaded_app(max_connections: int) -> Any:
    """The ASGI app an over-the-cap connection's request is handed to."""
    body = _error_json(f"the server has {max_connections} open connections, its limit; "
                       f"retry in {OVERLOADED_RETRY_AFTER_S} s", "overloaded_error")
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()),
               (b"retry-after", str(OVERLOADED_RETRY_AFTER_S).encode()),
               (b"connection", b"close")]

    async def overloaded(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return overloaded


class _TickWriter:
    """The transport as one response's writer sees it: writes made in one turn of the event loop
    leave as one write at the end of it (see the module rules). uvicorn's response cycle uses only
    ``write``, ``close`` and ``is_closing``."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if not pending or self._transport.is_closing():
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._transport.close()


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a header deadline and a connection cap.

    Use ``edge_protocol(limits)``: it makes a subclass bound to one server's limits and tallies.
    """

    limits: EdgeLimits = EdgeLimits()
    timeouts = FloodLog("closed connections whose request headers did not arrive in time", log)
    refusals = FloodLog("refused connections over the connection cap (503)", log)
    overloaded_app: Any = staticmethod(_overloaded_app(DEFAULT_MAX_CONNECTIONS))

    _deadline: asyncio.TimerHandle | None = None
    _refused = False
    _in_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()
        if len(self.connections) > self.limits.max_connections:
            self._refused = True
            self.app = self.overloaded_app
            self.refusals.add(_peer(self.client))

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._start_deadline()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_deadline()
        super().on_headers_complete()
        cycle = self.cycle  # a new one for this request, unless it is a WebSocket upgrade
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = _TickWriter(self.transport, self.loop)  # type: ignore[assignment]

    def _should_upgrade(self) -> bool:
        return not self._refused and super()._should_upgrade()

    def _unsupported_upgrade_warning(self) -> None:
        if not self._refused:  # the refusal is tallied; an upgrade over the cap is not news
            super()._unsupported_upgrade_warning()

    def _start_deadline(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._overdue)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _overdue(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.timeouts.add(_peer(self.client))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # close once the response in flight is written
            return
        if self._in_headers:
            self.transport.write(self._timeout_response())
        self.transport.close()

    def _timeout_response(self) -> bytes:
        body = _error_json(f"request headers not received within {self.limits.header_timeout_s:g} s",
                           "request_timeout")
        head = [b"HTTP/1.1 408 Request Timeout\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n",
                 b"content-length: " + str(len(body)).encode() + b"\r\n",
                 b"connection: close\r\n\r\n"]
        return b"".join(head) + body


def edge_protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """An ``EdgeProtocol`` class for one server (uvicorn's ``Config(http=...)``)."""
    return type("EdgeProtocol", (EdgeProtocol,), {
        "limits": limits, "overloaded_app": staticmethod(_overloaded_app(limits.max_connections)),
        "timeouts": FloodLog(EdgeProtocol.timeouts.what, log),
        "refusals": FloodLog(EdgeProtocol.refusals.what, log)})


def ensure_descriptors(limits: EdgeLimits) -> None:
    """Raise the soft descriptor limit to fit ``max_connections`` when the hard limit allows;
    otherwise warn that the cap cannot be reached (accept() would fail with EMFILE first)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = limits.max_connections + SPARE_DESCRIPTORS
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    if target < need:
        log.warning("max_connections is %d but this process may open only %d files; "
                    "raise the limit (ulimit -n) or lower max_connections",
                    limits.max_connections, target)

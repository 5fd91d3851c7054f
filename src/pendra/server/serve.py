"""Run a control-plane app under uvicorn inside the current event loop.

Owns the listening socket: binds first (so port 0 resolves to a real port before anything prints a
URL, and a taken port fails as ``CannotListen`` naming the address before a daemon creates
anything), hands the socket to uvicorn, and exposes the bound base URL. ``pendra server`` and
``pendra up`` both use it; so do tests that need a real server in-process. The HTTP edge (header
deadline, connection cap) is ``connections.py``'s.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from pendra.errors import CannotListen
from pendra.protocol.frames import MAX_FRAME_BYTES
from pendra.server.connections import EdgeLimits, edge_protocol, ensure_descriptors
from pendra.server.ws_limits import LimitedWebSocketProtocol

# How long a graceful shutdown may take before open connections are dropped.
SHUTDOWN_GRACE_S = 5.0


@dataclass
class RunningServer:
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[len("http"):]

    async def stop(self) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), SHUTDOWN_GRACE_S + 2)
        except TimeoutError:
            self.server.force_exit = True
            await self.task


# What to add to "cannot listen on HOST:PORT: <reason>" for the failures a user can fix.
_LISTEN_HINTS = {errno.EADDRINUSE: "is another pendra running? use --port",
                 errno.EACCES: "ports below 1024 need privileges; use --port",
                 errno.EADDRNOTAVAIL: "not an address of this machine; use --host"}


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; ``CannotListen`` (one line naming it) when that fails."""
    try:
        return _bind(host, port)
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = (exc.strerror or str(exc)).lower()
        hint = _LISTEN_HINTS.get(exc.errno or 0)
        raise CannotListen(f"cannot listen on {where}: {reason}"
                           + (f" ({hint})" if hint else "")) from exc


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Say IPPROTO_TCP explicitly: asyncio turns TCP_NODELAY on for accepted connections only when
    # the socket's protocol reads as TCP, and a socket made with proto 0 does not. Without it every
    # small write that follows another (a response body after its headers, an SSE event, a request
    # frame on a worker's WebSocket) waits for the peer's delayed ACK: ~40 ms each (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def serving(app: FastAPI, host: str, port: int, *, sock: socket.socket | None = None,
                  limits: EdgeLimits = EdgeLimits(),
                  log_level: str = "warning") -> AsyncIterator[RunningServer]:
    """Serve ``app`` on host:port until the block exits; startup errors propagate.

    ``sock``: a socket already made by ``bind(host, port)`` (daemons bind before anything else);
    it is closed with the server either way.
    """
    sock = sock if sock is not None else bind(host, port)
    bound_port = sock.getsockname()[1]
    ensure_descriptors(limits)
    # No permessage-deflate on /ws/gpu: a streamed answer is one small frame per token, and
    # compressing each one cost the worker a sixth of its time per frame sent (and the control
    # plane the matching inflate) to save a few hundred bytes; see docs/performance.md.
    # Every WebSocket starts with a frame limit of a few KiB (ws_limits.py); /ws/gpu raises it to
    # ws_max_size once the worker has authenticated.
    # log_config=None: uvicorn's loggers get no handlers of their own, so their lines reach the
    # one handler pendra/logs.py installs, in the same format.
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False,
                            log_config=None,
                            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
                            ws=LimitedWebSocketProtocol, ws_max_size=MAX_FRAME_BYTES,
                            ws_per_message_deflate=False, http=edge_protocol(limits))
    server = uvicorn.Server(config)
    # The CLI installs its own signal handling (one stop event for the whole process).
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{bound_port}")
    running = RunningServer(app, server, task, host, bound_port)
    try:
        while not server.started:
            if task.done():
                await task  # re-raise the start-up failure
                raise RuntimeError("the server stopped during start-up")
            await asyncio.sleep(0.02)
        yield running
    finally:
        await running.stop()
        sock.close()

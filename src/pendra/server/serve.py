"""Run a control-plane app under uvicorn inside the current event loop.

Owns the listening socket: binds first (so port 0 resolves to a real port before anything prints a
URL), hands the socket to uvicorn, and exposes the bound base URL. ``pendra server`` and
``pendra up`` both use it; so do tests that need a real server in-process.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from pendra.protocol.frames import MAX_FRAME_BYTES
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


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Say IPPROTO_TCP explicitly: asyncio turns TCP_NODELAY on for accepted connections only when
    # the socket's protocol reads as TCP, and a socket made with proto 0 does not. Without it every
    # small write that follows another (a response body after its headers, an SSE event, a request
    # frame on a worker's WebSocket) waits for the peer's delayed ACK: ~40 ms each (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serving(app: FastAPI, host: str, port: int, *,
                  log_level: str = "warning") -> AsyncIterator[RunningServer]:
    """Serve ``app`` on host:port until the block exits; startup errors propagate."""
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    # No permessage-deflate on /ws/gpu: a streamed answer is one small frame per token, and
    # compressing each one cost the worker a sixth of its time per frame sent (and the control
    # plane the matching inflate) to save a few hundred bytes; see docs/performance.md.
    # Every WebSocket starts with a frame limit of a few KiB (ws_limits.py); /ws/gpu raises it to
    # ws_max_size once the worker has authenticated.
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False,
                            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
                            ws=LimitedWebSocketProtocol, ws_max_size=MAX_FRAME_BYTES,
                            ws_per_message_deflate=False)
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

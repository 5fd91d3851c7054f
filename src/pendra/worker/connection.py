"""The worker's side of /ws/gpu: one WebSocket at a time, reconnecting forever.

``decide`` is the one place that says retry or give up: a refused key, an unsupported protocol
version or a removed worker end ``run()`` with a clear error; anything else reconnects with capped,
fully jittered exponential backoff that resets after a connection that stayed up.

Sending: every frame goes through one ``SendQueue`` per connection, encoded when it is queued (so
its sender sees an encoding error) and written by one writer task, in order. The writer takes
everything that is waiting at once and merges each run of chunks of one request into ``chunks``
frames (``frames.coalesce``): a backend that hands over a burst of tokens costs one frame and one
socket write, not one per token, and nothing waits for company (a lone chunk goes out as soon as
its sender yields). ``send`` waits while ``SEND_QUEUE_FRAMES`` are queued; ``flush`` waits until
the queue is written. A heartbeat (``ping``/``pong``) goes to the front of the queue and never
waits for room: it is ordered with nothing, and behind a backlog of a busy stream's chunks it
would reach the control plane late enough for the worker to think the control plane silent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pendra.config import WorkerSettings
from pendra.errors import AuthenticationFailed, ProtocolError
from pendra.protocol.close import CloseReason, close_reason_text, describe, retryable
from pendra.protocol.frames import (MAX_FRAME_BYTES, Frame, Inventory, Piece, Ping, Pong, coalesce,
                                    piece)
from pendra.protocol.session import Close, Output, Ready, Received, WorkerSession

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
# A connection that lived this long counts as good: the next failure starts backoff over.
STABLE_AFTER_S = 30.0
# Frames queued for the socket before ``send`` waits: a few bursts of every running request; a
# socket that stops draining holds back its senders instead of memory.
SEND_QUEUE_FRAMES = 1024


class SendQueue:
    """Encoded frames waiting for the connection's writer, in order, at most ``limit``."""

    def __init__(self, limit: int = SEND_QUEUE_FRAMES) -> None:
        self._pieces: list[Piece] = []
        self._limit = limit
        self._waiting = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self.closed = False

    async def put(self, frame: Frame) -> bool:
        """Queue ``frame`` (encoding errors raise here); False once the queue is closed."""
        encoded = piece(frame)
        if isinstance(frame, Ping | Pong):
            if self.closed:
                return False
            self._pieces.insert(0, encoded)
            self._waiting.set()
            self._empty.clear()
            return True
        while len(self._pieces) >= self._limit and not self.closed:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            return False
        self._pieces.append(encoded)
        self._waiting.set()
        self._empty.clear()
        return True

    async def take(self) -> list[bytes]:
        """Everything queued, coalesced (waits while the queue is empty)."""
        while not self._pieces:
            self._empty.set()
            self._waiting.clear()
            await self._waiting.wait()
        pieces, self._pieces = self._pieces, []
        self._room.set()
        return coalesce(pieces)

    def written(self) -> None:
        """The writer has sent what it took."""
        if not self._pieces:
            self._empty.set()

    async def drained(self) -> None:
        await self._empty.wait()

    def close(self) -> None:
        """Drop what is queued; release every waiting ``put`` (False) and ``drained``."""
        self.closed = True
        self._pieces.clear()
        self._room.set()
        self._empty.set()


class FrameHandler(Protocol):
    async def on_frame(self, frame: Frame) -> None: ...

    async def on_disconnect(self) -> None: ...


def backoff_s(attempt: int) -> float:
    """Full jitter: uniform in [0, min(max, initial * 2**attempt)]."""
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** attempt))


def decide(code: int | None, detail: str) -> None:
    """Raise when the close means 'do not come back'; return to retry."""
    if retryable(code):
        return
    message = f"{describe(code)} ({detail})" if detail else describe(code)
    if code == CloseReason.UNSUPPORTED_VERSION:
        raise ProtocolError(message)
    raise AuthenticationFailed(message)


class Connection:
    def __init__(self, settings: WorkerSettings, handler: FrameHandler,
                 inventory: Callable[[], Inventory], *, software_version: str = "") -> None:
        self.settings = settings
        self.handler = handler
        self.inventory = inventory
        self.software_version = software_version
        self._ws: ClientConnection | None = None
        self._session: WorkerSession | None = None
        self._queue: SendQueue | None = None
        self._last_error = ""

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._session is not None and self._session.ready

    async def send(self, frame: Frame) -> bool:
        """Queue ``frame`` for the control plane; False when not connected (or the connection
        ended while it waited for room). Frames queued when the socket drops are lost with it."""
        queue = self._queue
        if queue is None or not self.connected:
            return False
        return await queue.put(frame)

    async def flush(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until every queued frame has been written."""
        if (queue := self._queue) is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await queue.drained()
            except TimeoutError:
                log.warning("frames for the control plane still unsent after %.0fs", timeout_s)

    async def inventory_changed(self) -> None:
        await self.send(self.inventory())

    async def run(self) -> None:
        attempt = 0
        while True:
            started = time.monotonic()
            code, detail = await self._once()
            decide(code, detail)
            if time.monotonic() - started >= STABLE_AFTER_S:
                attempt = 0
            delay = backoff_s(attempt)
            attempt += 1
            message = f"{describe(code)}: {detail}" if detail else describe(code)
            if message != self._last_error:
                log.warning("control plane connection: %s; reconnecting (backoff up to %.0fs)",
                            message, min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** attempt))
                self._last_error = message
            await asyncio.sleep(delay)

    async def _once(self) -> tuple[int | None, str]:
        """One connection from dial to close: (close code or None, detail)."""
        url = self.settings.gpu_ws_url
        try:
            async with connect(url, max_size=MAX_FRAME_BYTES, ping_interval=None,
                               open_timeout=10, close_timeout=2) as ws:
                session = WorkerSession(
                    worker_id=self.settings.worker_id, name=self.settings.worker_name,
                    private_key=self.settings.private_key,
                    max_concurrent=self.settings.max_concurrent,
                    software_version=self.software_version,
                    heartbeat_interval_s=self.settings.heartbeat_interval_s,
                    heartbeat_timeout_s=self.settings.heartbeat_timeout_s, now=time.monotonic())
                _no_delay(ws)
                queue = SendQueue()
                self._ws, self._session, self._queue = ws, session, queue
                try:
                    return await self._serve(ws, session, queue)
                finally:
                    queue.close()
                    self._ws, self._session, self._queue = None, None, None
                    await self.handler.on_disconnect()
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            return None, f"cannot reach {url} ({type(exc).__name__}: {exc})"

    async def _serve(self, ws: ClientConnection, session: WorkerSession,
                     queue: SendQueue) -> tuple[int | None, str]:
        """Drive ``session`` over ``ws`` until it closes: (close code or None, detail)."""

        async def act(outputs: list[Output]) -> tuple[int, str] | None:
            for output in outputs:
                if isinstance(output, Close):
                    await ws.close(int(output.reason), close_reason_text(output.detail))
                    return int(output.reason), output.detail
                if isinstance(output, Frame):
                    await queue.put(output)
                elif isinstance(output, Ready):
                    self._last_error = ""
                    log.info("connected to %s as %s (%s)", self.settings.gpu_ws_url,
                             self.settings.worker_name, self.settings.worker_id)
                    await self.send(self.inventory())
                elif isinstance(output, Received):
                    await self.handler.on_frame(output.frame)
            return None

        async def beat() -> tuple[int, str]:
            while True:
                await asyncio.sleep(max(session.next_tick_at() - time.monotonic(), 0))
                if (ended := await act(session.tick(time.monotonic()))) is not None:
                    return ended

        async def read() -> tuple[int | None, str]:
            while True:
                raw = await ws.recv()
                if (ended := await act(session.receive_raw(raw, time.monotonic()))) is not None:
                    return ended

        async def write() -> tuple[int, str]:
            while True:
                for message in await queue.take():
                    await ws.send(message, text=True)
                queue.written()

        tasks = [asyncio.create_task(read(), name="ws-worker-read"),
                 asyncio.create_task(beat(), name="ws-worker-beat"),
                 asyncio.create_task(write(), name="ws-worker-write")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        except ConnectionClosed as exc:  # the peer closed, or a send found the socket gone
            rcvd = exc.rcvd
            return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else "connection lost")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _no_delay(ws: ClientConnection) -> None:
    """TCP_NODELAY on the socket to the control plane: a frame is a whole message, and Nagle's
    algorithm would hold a small one back for the peer's delayed ACK (docs/performance.md)."""
    sock = ws.transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

"""The /ws/gpu endpoint: the socket loops around one ServerSession and one hub WorkerLink.

The session decides (handshake, heartbeats, what each frame means) and the hub keeps the state; this
module only moves frames between them and the socket:

- before it: a stranger's budget (``StrangerBudget``). At most ``MAX_HANDSHAKES_PER_ADDRESS``
  sockets from one address and ``MAX_HANDSHAKES`` in all may be unauthenticated at once; one more
  is denied with an HTTP 503 and Retry-After before the upgrade. Until authenticated, a frame may
  be at most ``HANDSHAKE_FRAME_BYTES`` (enforced by the socket layer, ws_limits.py) and the
  handshake must finish within the session's ``HANDSHAKE_TIMEOUT_S``;
- handshake: send the challenge, read frames until the session says ``Authenticated`` or
  ``Close``, looking up the enrolled worker when it asks (``KeyNeeded``); a refusal is logged with
  its reason and the peer's address (everything the peer sent is cut first) — the first of each
  kind at once, then a count a minute, so a flood of strangers cannot flood the log — and the
  socket is closed with the session's code. Once authenticated, the frame limit is raised to
  ``MAX_FRAME_BYTES`` and the worker is attached under its *enrolled* name;
- then four tasks, the first to end ends the connection: *read* (frames to the session, its
  outputs to the link), *write* (the link's outbox to the socket), *beat* (the session's clock:
  a probe of a silent worker, the silence bound; it wakes about once a heartbeat interval and
  touches no store) and *close* (the hub asked for this socket to go: superseded,
  removed, shutting down);
- every frame in and out (handshake included) is counted in the app's ``SocketTraffic``: two
  integer additions, read by the metrics at scrape time;
- whatever ended it, ``on_seen`` is told the worker's last sign of life (no I/O: last_seen.py
  writes it with the others), the link is detached (open requests end with WorkerGone) and the
  socket is closed with the reason that ended it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from pendra.protocol.close import CloseReason, close_reason_text
from pendra.protocol.frames import HANDSHAKE_FRAME_BYTES, MAX_FRAME_BYTES, Frame, Hello, dump_frame
from pendra.protocol.session import (Authenticated, Close, InventoryUpdated, KeyNeeded, Output,
                                     Received, ServerSession)
from pendra.server.errors import error_body
from pendra.server.flood_log import FloodLog
from pendra.server.hub import Hub, WorkerLink
from pendra.server.ws_limits import raise_frame_limit

log = logging.getLogger(__name__)

# Unauthenticated sockets at once, in all and from one address: a real fleet reconnecting after a
# restart handshakes in milliseconds each, and its workers retry a denial with backoff. A whole
# fleet may sit behind one NAT address, so one address may hold a quarter of the total.
MAX_HANDSHAKES = 256
MAX_HANDSHAKES_PER_ADDRESS = 64
# What a denied stranger is told to wait before trying again.
DENIED_RETRY_AFTER_S = 2
# WebSocket close code for "message too big" (RFC 6455), sent by the socket layer.
MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True)
class Enrolled:
    """What the store says about an enrolled worker: the key it must sign with, its name."""

    public_key: str
    name: str


LookupWorker = Callable[[str], Awaitable[Enrolled | None]]
# Told a worker's last sign of life as its connection ends (it must not block: last_seen.py).
OnSeen = Callable[[str, datetime], None]


class StrangerBudget:
    """How many sockets may be unauthenticated at once, in all and per address; and the log of
    refusals, which a flood of strangers must not flood (one line a minute per kind)."""

    def __init__(self, *, total: int = MAX_HANDSHAKES,
                 per_address: int = MAX_HANDSHAKES_PER_ADDRESS) -> None:
        self.total = total
        self.per_address = per_address
        self._by_address: Counter[str] = Counter()
        self._open = 0
        self._refusals: dict[str, FloodLog] = {}

    def refused(self, what: str, peer: str, detail: str = "") -> None:
        """Log a refused stranger (kind ``what``): the first at once, then a count a minute."""
        if what not in self._refusals:
            self._refusals[what] = FloodLog(f"/ws/gpu: {what}", log)
        self._refusals[what].add(peer, detail)

    @property
    def open(self) -> int:
        return self._open

    def admit(self, address: str) -> bool:
        """Take a place for a socket from ``address``; False when there is none."""
        if self._open >= self.total or self._by_address[address] >= self.per_address:
            return False
        self._open += 1
        self._by_address[address] += 1
        return True

    def release(self, address: str) -> None:
        self._open -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    @contextmanager
    def place(self, address: str) -> Iterator[bool]:
        """``with budget.place(addr) as admitted:`` — the place is given back on exit."""
        admitted = self.admit(address)
        try:
            yield admitted
        finally:
            if admitted:
                self.release(address)


@dataclass
class SocketTraffic:
    """Frames and payload bytes (characters, for text frames) on every /ws/gpu socket of one
    app, by direction."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class _Socket:
    """The accepted WebSocket: sends serialised, closes once; counts what passes."""

    def __init__(self, websocket: WebSocket, traffic: SocketTraffic) -> None:
        self.websocket = websocket
        self.traffic = traffic
        self.closed = False
        self.close_code: int | None = None
        client = websocket.client
        self.address = client.host if client else "?"
        self.peer = f"{client.host}:{client.port}" if client else "?"

    async def send(self, frame: Frame | str) -> None:
        text = frame if isinstance(frame, str) else dump_frame(frame)
        await self.websocket.send_text(text)
        self.traffic.frames_out += 1
        self.traffic.bytes_out += len(text)

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the peer has closed (``close_code`` says how)."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            self.closed = True
            self.close_code = message.get("code")
            return None
        text: str | bytes | None = message.get("text")
        if text is None:
            text = message.get("bytes", b"")
        self.traffic.frames_in += 1
        self.traffic.bytes_in += len(text)
        return text

    async def close(self, reason: CloseReason, detail: str) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.websocket.close(code=int(reason), reason=close_reason_text(detail))
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass  # the peer closed first


async def serve_gpu_socket(websocket: WebSocket, hub: Hub, lookup_worker: LookupWorker,
                           budget: StrangerBudget, on_seen: OnSeen | None = None,
                           traffic: SocketTraffic | None = None) -> None:
    socket = _Socket(websocket, traffic if traffic is not None else SocketTraffic())
    with budget.place(socket.address) as admitted:
        if not admitted:
            budget.refused(f"denied, too many unauthenticated sockets (at most {budget.total} in "
                           f"all, {budget.per_address} per address)", socket.peer)
            await _deny(websocket)
            return
        await websocket.accept()
        session = ServerSession(heartbeat_interval_s=hub.heartbeat_interval_s,
                                heartbeat_timeout_s=hub.heartbeat_timeout_s, now=time.monotonic())
        try:
            admitted_worker = await _handshake(socket, session, lookup_worker, budget)
        except (OSError, RuntimeError, WebSocketDisconnect):
            admitted_worker = None  # the peer went away mid-handshake
    if admitted_worker is None:
        await socket.close(CloseReason.NORMAL, "bye")
        return
    hello, enrolled = admitted_worker
    raise_frame_limit(websocket, MAX_FRAME_BYTES)
    link = hub.attach(hello, enrolled.name)
    detail = "connection closed"
    try:
        detail = await _connected(socket, session, link)
    except (OSError, RuntimeError, WebSocketDisconnect) as exc:
        detail = f"socket error: {exc}"
    finally:
        if on_seen is not None:
            on_seen(link.view.id, link.view.last_seen)
        hub.detach(link, detail)
        await socket.close(CloseReason.NORMAL, "bye")


async def _deny(websocket: WebSocket) -> None:
    """Refuse the upgrade with 503 + Retry-After (or a close, where denials are unsupported)."""
    body = error_body("too many unauthenticated /ws/gpu connections; try again shortly",
                      "overloaded_error")
    response = JSONResponse(body, status_code=503,
                            headers={"Retry-After": str(DENIED_RETRY_AFTER_S)})
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.close(code=1013)  # "try again later"


async def _handshake(socket: _Socket, session: ServerSession, lookup_worker: LookupWorker,
                     budget: StrangerBudget) -> tuple[Hello, Enrolled] | None:
    """Challenge to ``Authenticated``: the worker's hello and enrolment, or None (refused and
    closed)."""
    await socket.send(session.challenge())
    worker_id = ""
    enrolled: Enrolled | None = None
    while True:
        try:
            async with asyncio.timeout(max(session.next_tick_at() - time.monotonic(), 0)):
                raw = await socket.receive()
        except TimeoutError:
            outputs = session.tick(time.monotonic())
        else:
            if raw is None:
                if socket.close_code == MESSAGE_TOO_BIG:
                    budget.refused(f"refused, a frame over {HANDSHAKE_FRAME_BYTES} bytes before "
                                   "authentication", socket.peer)
                return None
            outputs = session.receive_raw(raw, time.monotonic())
        while outputs:
            output, outputs = outputs[0], outputs[1:]
            if isinstance(output, KeyNeeded):
                worker_id = output.worker_id  # bounded by the hello's model
                enrolled = await lookup_worker(worker_id)
                key = enrolled.public_key if enrolled is not None else None
                outputs = session.key_found(key, time.monotonic()) + outputs
            elif isinstance(output, Close):
                budget.refused(f"refused handshakes, {output.reason.name}", socket.peer,
                               (f"worker {worker_id}: " if worker_id else "") + output.detail)
                await socket.close(output.reason, output.detail)
                return None
            elif isinstance(output, Authenticated):
                assert enrolled is not None
                return output.hello, enrolled
            elif isinstance(output, Frame):
                await socket.send(output)


async def _connected(socket: _Socket, session: ServerSession, link: WorkerLink) -> str:
    """Serve an authenticated worker until something ends the connection; returns why."""

    async def act(outputs: list[Output]) -> str | None:
        for output in outputs:
            if isinstance(output, Received):
                await link.deliver(output.frame)
            elif isinstance(output, InventoryUpdated):
                link.inventory(output)
            elif isinstance(output, Close):
                if output.reason is CloseReason.PROTOCOL_ERROR:
                    log.warning("worker %s (%s) sent a frame the protocol refuses: %s",
                                link.view.name, link.view.id, output.detail)
                await socket.close(output.reason, output.detail)
                return f"{output.reason.name}: {output.detail}"
            elif isinstance(output, Frame):
                link.offer(output)  # a pong or a ping: dropped, not queued, if the outbox is full
        return None

    async def read() -> str:
        while True:
            raw = await socket.receive()
            if raw is None:
                return "socket closed by the worker"
            link.touch()
            if (ended := await act(session.receive_raw(raw, time.monotonic()))) is not None:
                return ended

    async def write() -> str:
        while True:
            outgoing = await link.next_outgoing()
            try:
                text = outgoing if isinstance(outgoing, str) else dump_frame(outgoing)
            except ValueError:  # one frame that cannot be encoded must not end the connection
                log.exception("worker %s: dropped a %s frame that cannot be encoded",
                              link.view.name, getattr(outgoing, "type", "?"))
                continue
            await socket.send(text)

    async def beat() -> str:
        while True:
            await asyncio.sleep(max(session.next_tick_at() - time.monotonic(), 0))
            if (ended := await act(session.tick(time.monotonic()))) is not None:
                return ended

    async def closer() -> str:
        wanted = await link.close_requested()
        session.close(wanted.reason, wanted.detail)
        await socket.close(wanted.reason, wanted.detail)
        return f"{wanted.reason.name}: {wanted.detail}"

    tasks = [asyncio.create_task(work(), name=f"ws-{work.__name__}:{link.view.id}")
             for work in (read, write, beat, closer)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""The /ws/gpu endpoint: the socket loops around one ServerSession and one hub WorkerLink.

The session decides (handshake, heartbeats, what each frame means) and the hub keeps the state; this
module only moves frames between them and the socket:

- handshake: send the challenge, read frames until the session says ``Authenticated`` or
  ``Close``, looking up the enrolled key when it asks (``KeyNeeded``); a refusal is logged once
  with its reason and the peer's address, and the socket is closed with the session's code;
- then four tasks, the first to end ends the connection: *read* (frames to the session, its
  outputs to the link), *write* (the link's outbox to the socket), *beat* (the session's clock:
  pings out, the silence bound) and *close* (the hub asked for this socket to go: superseded,
  removed, shutting down);
- whatever ended it, the link is detached (open requests end with WorkerGone) and the socket is
  closed with the reason that ended it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from pendra.protocol.close import CloseReason, close_reason_text
from pendra.protocol.frames import Frame, Hello, dump_frame
from pendra.protocol.session import (Authenticated, Close, InventoryUpdated, KeyNeeded, Output,
                                     Received, ServerSession)
from pendra.server.hub import Hub, WorkerLink

log = logging.getLogger(__name__)

LookupKey = Callable[[str], Awaitable[str | None]]
OnSeen = Callable[[str], Awaitable[None]]
class _Socket:
    """The accepted WebSocket: sends serialised, closes once."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.closed = False
        client = websocket.client
        self.peer = f"{client.host}:{client.port}" if client else "?"

    async def send(self, frame: Frame | str) -> None:
        await self.websocket.send_text(frame if isinstance(frame, str) else dump_frame(frame))

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the peer has closed."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            self.closed = True
            return None
        text: str | None = message.get("text")
        return text if text is not None else message.get("bytes", b"")

    async def close(self, reason: CloseReason, detail: str) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.websocket.close(code=int(reason), reason=close_reason_text(detail))
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass  # the peer closed first


async def serve_gpu_socket(websocket: WebSocket, hub: Hub, lookup_public_key: LookupKey,
                           on_seen: OnSeen | None = None) -> None:
    await websocket.accept()
    socket = _Socket(websocket)
    session = ServerSession(heartbeat_interval_s=hub.heartbeat_interval_s,
                            heartbeat_timeout_s=hub.heartbeat_timeout_s, now=time.monotonic())
    try:
        hello = await _handshake(socket, session, lookup_public_key)
    except (OSError, RuntimeError, WebSocketDisconnect):
        hello = None  # the peer went away mid-handshake
    if hello is None:
        await socket.close(CloseReason.NORMAL, "bye")
        return
    link = hub.attach(hello)
    detail = "connection closed"
    try:
        if on_seen is not None:
            await on_seen(hello.worker_id)
        detail = await _connected(socket, session, link, on_seen)
    except (OSError, RuntimeError, WebSocketDisconnect) as exc:
        detail = f"socket error: {exc}"
    finally:
        hub.detach(link, detail)
        await socket.close(CloseReason.NORMAL, "bye")


async def _handshake(socket: _Socket, session: ServerSession,
                     lookup_public_key: LookupKey) -> Hello | None:
    """Challenge to ``Authenticated``: the worker's hello, or None (refused and closed)."""
    await socket.send(session.challenge())
    worker_id = ""
    while True:
        try:
            async with asyncio.timeout(max(session.next_tick_at() - time.monotonic(), 0)):
                raw = await socket.receive()
        except TimeoutError:
            outputs = session.tick(time.monotonic())
        else:
            if raw is None:
                return None
            outputs = session.receive_raw(raw, time.monotonic())
        while outputs:
            output, outputs = outputs[0], outputs[1:]
            if isinstance(output, KeyNeeded):
                worker_id = output.worker_id
                key = await lookup_public_key(worker_id)
                outputs = session.key_found(key, time.monotonic()) + outputs
            elif isinstance(output, Close):
                log.warning("refused /ws/gpu handshake from %s (worker %r): %s — %s", socket.peer,
                            worker_id, output.reason.name, output.detail)
                await socket.close(output.reason, output.detail)
                return None
            elif isinstance(output, Authenticated):
                return output.hello
            elif isinstance(output, Frame):
                await socket.send(output)


async def _connected(socket: _Socket, session: ServerSession, link: WorkerLink,
                     on_seen: OnSeen | None) -> str:
    """Serve an authenticated worker until something ends the connection; returns why."""

    async def act(outputs: list[Output]) -> str | None:
        for output in outputs:
            if isinstance(output, Received):
                await link.deliver(output.frame)
            elif isinstance(output, InventoryUpdated):
                link.inventory(output)
            elif isinstance(output, Close):
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
        last_seen_stamp = time.monotonic()
        while True:
            due = min(session.next_tick_at(), last_seen_stamp + session.heartbeat_interval_s)
            await asyncio.sleep(max(due - time.monotonic(), 0))
            if (ended := await act(session.tick(time.monotonic()))) is not None:
                return ended
            if on_seen is not None and time.monotonic() - last_seen_stamp >= \
                    session.heartbeat_interval_s and not link.closed:
                last_seen_stamp = time.monotonic()
                await on_seen(link.view.id)

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

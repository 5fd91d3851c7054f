"""The two bounded queues between a worker's socket and the hub's users.

- ``Outbox``: frames waiting for one worker's socket writer, in order, at most ``limit`` of them.
  ``offer`` never waits (a frame not worth waiting for is dropped when full); ``put`` waits for
  room; ``close`` drops what is queued and releases every waiting ``put``.
- ``FrameStream``: the frames of one request or operation, at most ``STREAM_FRAMES`` of them,
  ending after a terminal frame or a failure. A failure is seen by the consumer after the frames
  already queued; ``WAKE`` wakes a consumer blocked on an empty stream so it sees the failure.

No I/O and no knowledge of workers: the hub (hub.py) decides what goes in and what a failure is.
"""

from __future__ import annotations

import asyncio
from collections import deque

from pendra.errors import PendraError
from pendra.protocol.frames import Frame

# Frames buffered per request or operation before the worker's read loop waits for the consumer:
# enough for a burst of tokens, small enough that a stuck consumer holds little memory.
STREAM_FRAMES = 64

# What the socket writer sends: a frame, or a frame already encoded (a request, checked at open).
Outgoing = Frame | str

WAKE = object()  # wakes a consumer blocked on an empty stream so it sees the failure


class Outbox:
    """Frames for one worker's socket writer, in order, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        self._frames: deque[Outgoing] = deque()
        self._limit = limit
        self._nonempty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    def offer(self, frame: Outgoing) -> bool:
        """Queue ``frame`` if there is room now; False (frame dropped) when full or closed."""
        if self.closed or len(self._frames) >= self._limit:
            return False
        self._frames.append(frame)
        self._nonempty.set()
        if len(self._frames) >= self._limit:
            self._room.clear()
        return True

    async def put(self, frame: Frame) -> bool:
        """Queue ``frame``, waiting for room; False when the outbox closed first."""
        while not self.offer(frame):
            if self.closed:
                return False
            await self._room.wait()
        return True

    async def get(self) -> Outgoing:
        while not self._frames:
            self._nonempty.clear()
            await self._nonempty.wait()
        frame = self._frames.popleft()
        self._room.set()
        return frame

    def close(self) -> None:
        """Drop what is queued and release every waiting ``put`` (they return False)."""
        self.closed = True
        self._frames.clear()
        self._room.set()


class FrameStream:
    """The frames of one request or operation: bounded, ending after a terminal frame or failure."""

    def __init__(self, terminal: tuple[type[Frame], ...], limit: int = STREAM_FRAMES) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(limit)
        self._terminal = terminal
        self.ended = False  # the terminal frame or the failure is queued: nothing more comes
        self._consumed = False  # the consumer has seen the end
        self._failure: PendraError | None = None

    async def put(self, frame: Frame) -> None:
        if self.ended:
            return
        await self._queue.put(frame)
        if isinstance(frame, self._terminal):
            self.ended = True

    def offer(self, frame: Frame) -> bool:
        """``put`` without waiting: False (nothing queued) when the stream is full."""
        if self.ended:
            return True
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        if isinstance(frame, self._terminal):
            self.ended = True
        return True

    def ready(self) -> list[Frame]:
        """The frames queued now, without waiting (up to and including a terminal frame); a
        failure is left for ``next`` to raise."""
        frames: list[Frame] = []
        while not self._consumed and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is WAKE:
                continue
            assert isinstance(item, Frame)
            frames.append(item)
            if isinstance(item, self._terminal):
                self._consumed = True
        return frames

    def fail(self, error: PendraError) -> None:
        """End the stream with ``error``, raised to the consumer after what is already queued."""
        if self.ended:
            return
        self.ended = True
        self._failure = error
        try:
            self._queue.put_nowait(WAKE)
        except asyncio.QueueFull:
            pass  # the consumer is not waiting: it reads what is queued, then sees the failure

    async def next(self) -> Frame:
        """The next frame; raises the failure once the queued frames are read, and
        StopAsyncIteration after the terminal frame."""
        while True:
            if self._consumed:
                if self._failure is not None:
                    raise self._failure
                raise StopAsyncIteration
            if self._failure is not None and self._queue.empty():
                self._consumed = True
                raise self._failure
            item = await self._queue.get()
            if item is WAKE:
                continue
            assert isinstance(item, Frame)
            if isinstance(item, self._terminal):
                self._consumed = True
            return item

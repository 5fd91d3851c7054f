"""The control plane's registry of connected workers and of the requests and operations in flight.

No HTTP and no sockets here: the /ws/gpu endpoint (gpu_socket.py) drives one ``WorkerLink`` per
authenticated socket — it writes what ``next_outgoing`` gives it, hands every application frame to
``deliver`` — and the API, the router and the install driver use the ``Hub``.

Rules:
- A worker is present from its authenticated hello until its socket ends. A second connection with
  the same id supersedes the first: the old link is dropped at once and its socket is closed with
  SUPERSEDED.
- ``open_request`` is synchronous (callers do not await it). It encodes the request frame first — a body that cannot be encoded (text that is
  not valid Unicode, nesting past the serialiser's depth) fails that one request with 400
  ``InvalidRequest`` before a slot is taken, and never reaches the socket — then reserves one of
  the worker's ``max_concurrent`` slots and queues the encoded frame, without waiting. The slot
  is released exactly once: when the worker ends the request
  (End/Error), or when the handle is closed (``aclose``, which first sends ``cancel`` if the request
  had not ended), whichever comes first.
- When a worker goes (its socket ends, it is superseded, removed, or the hub shuts down) every open
  request and operation of it ends with ``WorkerGone`` — after the frames already received.
- Everything is bounded. Each request/operation buffers at most ``streams.STREAM_FRAMES`` frames
  (streams.py holds the outbox and the per-request stream); when full,
  the worker's read loop waits for the consumer (back-pressure), but at most ``stall_s`` (half the
  heartbeat timeout, so a stalled HTTP client can't starve the worker's heartbeats): after that the
  request is cancelled on the worker and its handle ends with ``WorkerGone``. Frames waiting for a
  worker's socket are at most ``OUTBOX_FRAMES``; liveness frames are dropped rather than queued
  past that, and ``open_request`` then says ``NoCapacity``.
- A worker's models whose backend stops answering leave ``models`` (the worker's inventory says
  so) but are remembered in ``stranded`` until that backend answers again or the worker goes.
- ``index`` (fleet_index.py) is kept exact here: a worker is put in it on attach and on every
  inventory, removed when it is dropped or superseded, and refiled whenever its ``in_flight`` or
  ``max_concurrent`` moves (the view's setters); the router reads it instead of scanning.
- A worker older than protocol version 4 gets no transcription requests: its models' ``audio``
  capability is dropped as its inventory arrives (``transcription_capable``).
- ``version`` bumps on every connect, disconnect and inventory change; ``wait_changed`` waiters wake
  then, ``wait_for_capacity`` waiters also whenever a slot frees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from datetime import UTC, datetime

from pendra.errors import InvalidRequest, NoCapacity, PendraError
from pendra.names import name_key
from pendra.protocol.close import CloseReason, describe
from pendra.protocol.frames import (PROTOCOL_VERSION, Cancel, CancelOp, Chunk, Chunks, End,
                                    Error, Frame, Hello, Install, OpDone, OpFailed, Progress,
                                    Request, Uninstall, dump_frame)
from pendra.protocol.inventory import BackendStatus, ModelInfo
from pendra.protocol.transcription import TRANSCRIPTION_SINCE
from pendra.protocol.session import Close, InventoryUpdated
from pendra.server.fleet_index import FleetIndex
from pendra.server.streams import FrameStream, Outbox, Outgoing

log = logging.getLogger(__name__)

# Frames waiting for one worker's socket writer. Requests are bounded by the worker's slots
# (at most 64); reaching this means the worker has stopped reading its socket.
OUTBOX_FRAMES = 256
# Seconds ``Hub.close`` waits for the sockets it closed to finish.
CLOSE_DEADLINE_S = 5.0


class WorkerGone(PendraError):
    """The worker disconnected (or was not connected) while a request or operation was open."""

    status = 502
    kind = "worker_error"

    def __init__(self, worker_id: str, worker_name: str = "", detail: str = "disconnected") -> None:
        super().__init__(f"worker '{worker_name or worker_id}' {detail}")
        self.worker_id = worker_id
        self.worker_name = worker_name


class WorkerView:
    """One connected worker as the router and the console see it (live; copy it to snapshot).

    ``in_flight`` and ``max_concurrent`` are properties: setting either refiles the worker in the
    hub's ``FleetIndex`` by its new load, so whoever moves them keeps routing exact.
    """

    def __init__(self, *, id: str, name: str, connected_at: datetime, last_seen: datetime,
                 max_concurrent: int, in_flight: int = 0,
                 backends: list[BackendStatus] | None = None,
                 models: dict[str, ModelInfo] | None = None, names: dict[str, str] | None = None,
                 stranded: dict[str, str] | None = None, software_version: str = "",
                 protocol_version: int = PROTOCOL_VERSION) -> None:
        self.id = id
        self.name = name
        self.connected_at = connected_at
        self.last_seen = last_seen
        self._index: FleetIndex | None = None  # set while the hub's index holds this view
        self._max_concurrent = max_concurrent
        self._in_flight = in_flight
        self.backends: list[BackendStatus] = backends or []
        self.models: dict[str, ModelInfo] = models or {}  # by model id
        # The same ids by ``pendra.names.name_key`` (the first in sorted order when two share a key).
        self.names: dict[str, str] = names or {}
        # Models it served until their backend stopped answering (model id -> backend kind); kept
        # while that backend stays down, so a request for them is told "unavailable", not "not
        # found".
        self.stranded: dict[str, str] = stranded or {}
        self.software_version = software_version
        # The version its hello carried: which request kinds it knows (frames.KIND_SINCE).
        self.protocol_version = protocol_version

    def __repr__(self) -> str:
        return (f"WorkerView(id={self.id!r}, name={self.name!r}, "
                f"in_flight={self.in_flight}/{self.max_concurrent}, models={sorted(self.models)})")

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self._in_flight = value
        if self._index is not None:
            self._index.load_changed(self)

    @property
    def max_concurrent(self) -> int:
        return self._max_concurrent

    @max_concurrent.setter
    def max_concurrent(self, value: int) -> None:
        self._max_concurrent = value
        if self._index is not None:
            self._index.load_changed(self)

    @property
    def free(self) -> int:
        return max(self.max_concurrent - self.in_flight, 0)

    def has_verified(self, kind: str) -> bool:
        """Whether this worker reports a verified backend of ``kind`` (e.g. "ollama")."""
        return any(b.kind == kind and b.verified for b in self.backends)


class RequestHandle:
    """One request on one worker: iterate for Chunk/Chunks… then End or Error; always ``aclose``.

    Iterating raises ``WorkerGone`` if the worker goes before End/Error. ``aclose`` is idempotent
    and releases the slot (sending ``cancel`` first if the request had not ended); it is safe in a
    ``finally`` of a cancelled task. ``async with`` closes it too.
    """

    def __init__(self, link: WorkerLink, request_id: str) -> None:
        self.id = request_id
        self.worker = link.view
        self._link = link
        self._stream = FrameStream((End, Error))
        self._cancel_sent = False
        self._closed = False
        self._released = False

    def __aiter__(self) -> RequestHandle:
        return self

    async def __anext__(self) -> Chunk | Chunks | End | Error:
        frame = await self._stream.next()
        assert isinstance(frame, Chunk | Chunks | End | Error)
        return frame

    def ready(self) -> list[Chunk | Chunks | End | Error]:
        """The frames that have arrived and not been read, without waiting (see FrameStream)."""
        return self._stream.ready()  # type: ignore[return-value]

    async def __aenter__(self) -> RequestHandle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def cancel(self) -> None:
        """Tell the worker to abort (the client went away). Idempotent; no-op once ended."""
        if self._stream.ended or self._cancel_sent:
            return
        self._cancel_sent = True
        try:
            await self._link.send(Cancel(id=self.id))
        except WorkerGone:
            pass  # the worker is gone and aborts everything it was running

    async def aclose(self) -> None:
        """Release the slot, exactly once; cancel first if the request has not ended."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.cancel()
        finally:
            self._link.forget_request(self)


class OpHandle:
    """One install/uninstall on one worker: iterate for Progress… then OpDone or OpFailed.

    Iterating raises ``WorkerGone`` if the worker goes first. Cancel with ``Hub.cancel_op``.
    """

    def __init__(self, link: WorkerLink, op_id: str) -> None:
        self.op_id = op_id
        self.worker = link.view
        self._link = link
        self._stream = FrameStream((OpDone, OpFailed))

    def __aiter__(self) -> OpHandle:
        return self

    async def __anext__(self) -> Progress | OpDone | OpFailed:
        frame = await self._stream.next()
        assert isinstance(frame, Progress | OpDone | OpFailed)
        return frame

    async def aclose(self) -> None:
        """Stop listening (the operation keeps running on the worker)."""
        self._link.forget_op(self)


class WorkerLink:
    """One authenticated socket of one worker, as the hub sees it; the socket loop drives it."""

    def __init__(self, hub: Hub, view: WorkerView) -> None:
        self.view = view
        self._hub = hub
        self._outbox = Outbox(OUTBOX_FRAMES)
        self._requests: dict[str, RequestHandle] = {}
        self._ops: dict[str, OpHandle] = {}
        self._close_wanted = asyncio.Event()
        self._close: Close | None = None
        self.closed = False  # dropped from the hub: nothing more is sent or delivered
        self.finished = asyncio.Event()  # the socket loop is done with it

    # --- for the socket loop ------------------------------------------------------------------------

    async def next_outgoing(self) -> Outgoing:
        return await self._outbox.get()

    def offer(self, frame: Outgoing) -> bool:
        """Queue a frame that is not worth waiting for (ping, pong); False if dropped."""
        return self._outbox.offer(frame)

    async def send(self, frame: Frame) -> None:
        """Queue a frame, waiting for room; ``WorkerGone`` if the link closes first."""
        if not await self._outbox.put(frame):
            raise WorkerGone(self.view.id, self.view.name, "disconnected")

    async def close_requested(self) -> Close:
        """Wait until the hub wants this socket closed (superseded, removed, shutting down)."""
        await self._close_wanted.wait()
        assert self._close is not None
        return self._close

    def request_close(self, close: Close) -> None:
        if self._close is None:
            self._close = close
            self._close_wanted.set()

    def touch(self) -> None:
        self.view.last_seen = datetime.now(UTC)

    def inventory(self, event: InventoryUpdated) -> None:
        down = {b.kind for b in event.backends if not b.verified}
        stranded = {m: kind for m, kind in self.view.stranded.items() if kind in down}
        stranded.update({m: info.backend for m, info in self.view.models.items()
                         if info.backend in down and m not in event.models})
        self.view.stranded = stranded
        self.view.backends = list(event.backends)
        self.view.models = {model_id: transcription_capable(info, self.view.protocol_version)
                            for model_id, info in event.models.items()}
        self.view.names = {}
        for model_id in sorted(self.view.models):
            self.view.names.setdefault(name_key(model_id), model_id)
        self.view._max_concurrent = event.max_concurrent  # the index refiles it just below
        if not self.closed:
            self._hub.index.put(self.view)
        self._hub._notify(bump=True)

    async def deliver(self, frame: Frame) -> None:
        """An application frame from the worker: route it to its request or operation."""
        if isinstance(frame, Chunk | Chunks | End | Error):
            handle = self._requests.get(frame.id)
            if handle is None:
                return  # its consumer closed it already
            if not await self._feed(handle._stream, frame, frame.id):
                self.offer(Cancel(id=frame.id))
                self.forget_request(handle)
            elif isinstance(frame, End | Error):
                self.forget_request(handle)
        elif isinstance(frame, Progress | OpDone | OpFailed):
            op = self._ops.get(frame.op_id)
            if op is None:
                return
            if not await self._feed(op._stream, frame, frame.op_id) or \
                    isinstance(frame, OpDone | OpFailed):
                self.forget_op(op)

    async def _feed(self, stream: FrameStream, frame: Frame, what: str) -> bool:
        """Put with back-pressure, bounded by ``stall_s``; on a stall fail the stream instead."""
        if stream.offer(frame):
            return True  # room at once: no timer to arm (the common case, once per frame)
        try:
            async with asyncio.timeout(self._hub.stall_s):
                await stream.put(frame)
        except TimeoutError:
            log.warning("worker %s: abandoned %s, whose reader fell %.1fs behind", self.view.name,
                        what, self._hub.stall_s)
            stream.fail(WorkerGone(self.view.id, self.view.name,
                                   f"stream abandoned: the reader of {what} fell behind"))
            return False
        return True

    # --- for the handles -----------------------------------------------------------------------------

    def open_request(self, handle: RequestHandle) -> None:
        self._requests[handle.id] = handle
        self.view.in_flight += 1

    def forget_request(self, handle: RequestHandle) -> None:
        if self._requests.get(handle.id) is handle:
            del self._requests[handle.id]
        if not handle._released:
            handle._released = True
            self.view.in_flight = max(self.view.in_flight - 1, 0)
            self._hub._notify(bump=False)

    def forget_op(self, op: OpHandle) -> None:
        if self._ops.get(op.op_id) is op:
            del self._ops[op.op_id]

    def _fail_all(self, detail: str) -> None:
        for handle in self._requests.values():
            handle._stream.fail(WorkerGone(self.view.id, self.view.name, detail))
        for op in self._ops.values():
            op._stream.fail(WorkerGone(self.view.id, self.view.name, detail))
        self._requests.clear()
        self._ops.clear()


def transcription_capable(info: ModelInfo, protocol_version: int) -> ModelInfo:
    """``info`` as the control plane serves it from a worker speaking ``protocol_version``: a
    worker older than ``TRANSCRIPTION_SINCE`` is sent no transcription (protocol/transcription.py),
    so its models lose the ``audio`` capability (and with it the transcription type)."""
    if protocol_version >= TRANSCRIPTION_SINCE or "audio" not in info.capabilities:
        return info
    return dataclasses.replace(info, capabilities=tuple(c for c in info.capabilities
                                                        if c != "audio"))


def encode_request(frame: Request) -> str:
    """The frame as text for the socket; InvalidRequest (the client's fault) when it cannot be."""
    try:
        return dump_frame(frame)
    except ValueError as exc:  # pydantic_core.PydanticSerializationError
        reason = ("it holds text that is not valid Unicode" if "Unicode" in str(exc)
                  else "it nests too deep" if "depth" in str(exc) else "its body is not JSON")
        raise InvalidRequest(f"the request cannot be sent to a worker: {reason}") from exc


class Hub:
    """Who is connected, what they serve, and the requests/operations running on them."""

    def __init__(self, *, heartbeat_interval_s: float, heartbeat_timeout_s: float) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        # Longest the socket read loop waits for one slow consumer (see the module rules).
        self.stall_s = heartbeat_timeout_s / 2
        self._links: dict[str, WorkerLink] = {}
        # Who serves what and who is least loaded, kept exact on every change (fleet_index.py).
        self.index = FleetIndex()
        self._version = 0
        self._changed = asyncio.Event()
        self._closing = False

    # --- views ------------------------------------------------------------------------------------------

    def connected(self) -> list[WorkerView]:
        return [link.view for link in self._links.values()]

    def get(self, worker_id: str) -> WorkerView | None:
        link = self._links.get(worker_id)
        return link.view if link else None

    def serving(self, model_id: str) -> list[WorkerView]:
        """Connected workers whose latest inventory has ``model_id`` (from the index)."""
        return self.index.serving(model_id)

    def models(self) -> dict[str, tuple[ModelInfo, list[WorkerView]]]:
        """Every model served now, with the workers serving it (metadata from the first)."""
        found: dict[str, tuple[ModelInfo, list[WorkerView]]] = {}
        for link in self._links.values():
            for model_id, info in link.view.models.items():
                found.setdefault(model_id, (info, []))[1].append(link.view)
        return found

    @property
    def version(self) -> int:
        return self._version

    def _notify(self, *, bump: bool) -> None:
        if bump:
            self._version += 1
        woken, self._changed = self._changed, asyncio.Event()
        woken.set()

    async def wait_changed(self, since: int, timeout: float) -> int:
        """The version once it differs from ``since``, or the current one after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while self._version == since:
                    await self._changed.wait()
        except TimeoutError:
            pass
        return self._version

    async def wait_for_capacity(self, timeout: float) -> bool:
        """Wake when a slot frees or the fleet changes; False when ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

    # --- requests and operations ------------------------------------------------------------------------

    def _link(self, worker_id: str) -> WorkerLink:
        link = self._links.get(worker_id)
        if link is None:
            raise WorkerGone(worker_id, "", "is not connected")
        return link

    def open_request(self, worker_id: str, kind: str, model: str,
                     body: dict[str, object]) -> RequestHandle:
        """Reserve a slot on the worker and queue the request frame (see the module rules)."""
        link = self._link(worker_id)
        view = link.view
        if view.free <= 0:
            raise NoCapacity(f"worker '{view.name}' has no free slot "
                             f"({view.in_flight}/{view.max_concurrent} in flight)")
        request_id = "req_" + secrets.token_hex(8)
        encoded = encode_request(Request(id=request_id, kind=kind, model=model,  # type: ignore[arg-type]
                                         body=body))
        handle = RequestHandle(link, request_id)
        if not link.offer(encoded):
            raise NoCapacity(f"worker '{view.name}' is not reading its connection")
        link.open_request(handle)
        return handle

    async def start_op(self, worker_id: str, frame: Install | Uninstall) -> OpHandle:
        """Send an install/uninstall to the worker; iterate the handle for its progress."""
        link = self._link(worker_id)
        op = OpHandle(link, frame.op_id)
        link._ops[frame.op_id] = op
        try:
            await link.send(frame)
        except BaseException:
            link.forget_op(op)
            raise
        return op

    async def cancel_op(self, worker_id: str, op_id: str) -> None:
        await self._link(worker_id).send(CancelOp(op_id=op_id))

    async def disconnect(self, worker_id: str, reason: CloseReason) -> None:
        """Drop a worker now (e.g. it was removed) and close its socket with ``reason``."""
        link = self._links.get(worker_id)
        if link is None:
            return
        self._drop(link, f"was disconnected by the control plane ({describe(reason)})")
        link.request_close(Close(reason, describe(reason)))

    async def close(self) -> None:
        """Shutdown: refuse new workers, fail what is open, close every socket with GOING_AWAY
        and wait (at most ``CLOSE_DEADLINE_S``) for the sockets to finish."""
        self._closing = True
        links = list(self._links.values())
        for link in links:
            self._drop(link, "disconnected: the control plane is shutting down")
            link.request_close(Close(CloseReason.GOING_AWAY, describe(CloseReason.GOING_AWAY)))
        try:
            async with asyncio.timeout(CLOSE_DEADLINE_S):
                for link in links:
                    await link.finished.wait()
        except TimeoutError:
            log.warning("%d worker socket(s) did not close within %.0fs",
                        sum(not link.finished.is_set() for link in links), CLOSE_DEADLINE_S)

    # --- connections (called by the socket endpoint) -----------------------------------------------------

    def attach(self, hello: Hello, name: str) -> WorkerLink:
        """Register an authenticated worker under its enrolled ``name`` (not the one its hello
        claims); an older connection of the same id is superseded."""
        now = datetime.now(UTC)
        view = WorkerView(id=hello.worker_id, name=name, connected_at=now, last_seen=now,
                          max_concurrent=hello.max_concurrent,
                          software_version=hello.software_version,
                          protocol_version=hello.protocol_version)
        link = WorkerLink(self, view)
        if self._closing:
            link.closed = True
            link.request_close(Close(CloseReason.GOING_AWAY, describe(CloseReason.GOING_AWAY)))
            return link
        old = self._links.get(view.id)
        self._links[view.id] = link
        self.index.put(view)  # replaces the old link's entry, if any
        if old is not None:
            log.info("worker %s (%s) connected again; closing its older connection", view.name,
                     view.id)
            self._drop(old, "was replaced by a newer connection of the same worker")
            old.request_close(Close(CloseReason.SUPERSEDED, describe(CloseReason.SUPERSEDED)))
        else:
            log.info("worker %s (%s) connected", view.name, view.id)
        self._notify(bump=True)
        return link

    def detach(self, link: WorkerLink, detail: str) -> None:
        """The socket loop is done with ``link`` (for any reason); idempotent."""
        self._drop(link, f"disconnected ({detail})")
        link.finished.set()

    def _drop(self, link: WorkerLink, detail: str) -> None:
        if link.closed:
            return
        link.closed = True
        link._outbox.close()
        link._fail_all(detail)
        if self._links.get(link.view.id) is link:
            del self._links[link.view.id]
            self.index.remove(link.view.id)
            log.info("worker %s (%s) %s", link.view.name, link.view.id, detail)
            self._notify(bump=True)

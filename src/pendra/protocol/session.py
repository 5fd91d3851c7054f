"""The /ws/gpu session as two state machines that do no I/O; the socket loops around them are thin.

Inputs are frames (or raw text) and the clock; outputs are frames to send and events. Every input
method returns a list of outputs, in order; the loop sends each ``Frame`` and acts on each event:

- ``KeyNeeded(worker_id)``: server only, after a well-formed hello. Look the key up (the I/O the
  session does not do) and pass the result to ``ServerSession.key_found``.
- ``Authenticated(hello)``: server only; the worker proved its key. Register it.
- ``Ready(welcome)``: worker only; the server accepted us. Send the inventory.
- ``InventoryUpdated(backends, models, max_concurrent)``: server only; already validated (the
  frame's strict models), models keyed by id.
- ``Received(frame)``: an application frame for the layer above (server: chunk/end/error/progress/
  done/failed; worker: request/cancel/install/uninstall/cancel_op).
- ``Close(reason, detail)``: always the last output; the session is over. Close the socket with
  ``reason`` (the loop does, the session never touches a socket).

States (``State``), and what moves them:

    server:  AWAITING_HELLO --hello + key_found(ok)--> READY --close/timeout/bad frame--> CLOSED
    worker:  AWAITING_CHALLENGE --challenge--> AWAITING_WELCOME --welcome--> READY --...--> CLOSED

Rules stated once:
- The worker's first frame must be a ``Hello`` carrying a supported ``protocol_version`` (else
  UNSUPPORTED_VERSION, not retryable), the nonce of *this* session's challenge (a hello replayed
  from another connection carries another nonce: AUTH_FAILED), and a signature over
  ``signing.handshake_message(nonce, worker_id)`` that verifies against the key enrolled for
  ``worker_id`` (none enrolled, or a bad signature: AUTH_FAILED). Any other frame before the
  handshake completes, any frame in the wrong direction, and any unparseable frame: PROTOCOL_ERROR.
- The handshake must complete within ``handshake_timeout_s`` of the session starting
  (HANDSHAKE_TIMEOUT). Until it has, a frame may be at most ``HANDSHAKE_FRAME_BYTES``.
- Whatever the peer sent that a close detail repeats (a worker id, a frame type) is cut first
  (``peer_text``): a refusal costs the same whatever the peer sent.
- Once ready, every ``Ping`` is answered with a ``Pong``, and any frame from the peer counts as
  life; ``heartbeat_timeout_s`` without one: HEARTBEAT_TIMEOUT. Each side applies its own bounds;
  the server's travel in the welcome. The worker sends a ``Ping`` every ``heartbeat_interval_s``;
  the server's ``Pong`` is the worker's sign of the server's life. The server pings only a worker
  it has heard nothing from for ``probe_after_s`` (half-way between the interval and the timeout):
  a live worker's own pings keep that from happening, so an idle worker costs the server one
  frame in and one out per interval, not four.
- ``tick(now)`` must be called at ``next_tick_at()`` (or later; earlier is harmless).
- A closed session ignores every input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Union

from pendra.errors import ProtocolError
from pendra.protocol import signing
from pendra.protocol.close import CloseReason
from pendra.protocol.frames import (HANDSHAKE_FRAME_BYTES, MAX_FRAME_BYTES, PROTOCOL_VERSION,
                                    SUPPORTED_VERSIONS, Cancel, CancelOp, Challenge, Chunk, Chunks,
                                    End, Error, Frame, Hello, Install, Inventory, OpDone, OpFailed,
                                    Ping, Pong, Progress, Request, Uninstall, Welcome, parse_frame)
from pendra.protocol.inventory import BackendStatus, ModelInfo
from pendra.protocol.peer_text import peer_text

# Seconds from accepting a socket to a completed handshake: a real worker answers in milliseconds,
# and until then the socket is a stranger's, holding one of a few places (server/gpu_socket.py).
HANDSHAKE_TIMEOUT_S = 5.0

# Application frames each side may receive once ready (everything else is out of order).
TO_SERVER: tuple[type[Frame], ...] = (Chunk, Chunks, End, Error, Progress, OpDone, OpFailed)
TO_WORKER: tuple[type[Frame], ...] = (Request, Cancel, Install, Uninstall, CancelOp)


class State(Enum):
    AWAITING_HELLO = "awaiting_hello"
    AWAITING_CHALLENGE = "awaiting_challenge"
    AWAITING_WELCOME = "awaiting_welcome"
    READY = "ready"
    CLOSED = "closed"


# --- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyNeeded:
    worker_id: str


@dataclass(frozen=True)
class Authenticated:
    hello: Hello


@dataclass(frozen=True)
class Ready:
    welcome: Welcome


@dataclass(frozen=True)
class InventoryUpdated:
    backends: list[BackendStatus]
    models: dict[str, ModelInfo]
    max_concurrent: int


@dataclass(frozen=True)
class Received:
    frame: Frame


@dataclass(frozen=True)
class Close:
    reason: CloseReason
    detail: str


Event = Union[KeyNeeded, Authenticated, Ready, InventoryUpdated, Received, Close]
Output = Union[Frame, Event]


class _Session:
    """What both sides share: liveness, the handshake deadline, parsing, closing."""

    _handshaking: tuple[State, ...] = ()

    def __init__(self, state: State, *, now: float, heartbeat_interval_s: float,
                 heartbeat_timeout_s: float, handshake_timeout_s: float) -> None:
        self.state = state
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.handshake_deadline = now + handshake_timeout_s
        self.last_heard = now
        self.last_ping = now
        self.closed: Close | None = None

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def receive_raw(self, raw: str | bytes, now: float) -> list[Output]:
        """One WebSocket message from the peer; an unparseable one closes with PROTOCOL_ERROR."""
        if self.state is State.CLOSED:
            return []
        limit = MAX_FRAME_BYTES if self.state is State.READY else HANDSHAKE_FRAME_BYTES
        try:
            frame = parse_frame(raw, max_bytes=limit)
        except ProtocolError as exc:
            return self._close(CloseReason.PROTOCOL_ERROR, exc.message)
        return self.receive(frame, now)

    def receive(self, frame: Frame, now: float) -> list[Output]:
        """One frame from the peer."""
        if self.state is State.CLOSED:
            return []
        self.last_heard = now
        return self._handle(frame, now)

    def _handle(self, frame: Frame, now: float) -> list[Output]:
        raise NotImplementedError

    def tick(self, now: float) -> list[Output]:
        """Advance the clock: a handshake or heartbeat timeout, or a ping that is due."""
        if self.state in self._handshaking:
            if now >= self.handshake_deadline:
                return self._close(CloseReason.HANDSHAKE_TIMEOUT, "the handshake did not complete "
                                   f"within {self.handshake_timeout_s:g}s")
            return []
        if self.state is State.READY:
            silent = now - self.last_heard
            if silent >= self.heartbeat_timeout_s:
                return self._close(CloseReason.HEARTBEAT_TIMEOUT,
                                   f"nothing heard for {silent:.1f}s")
            if now >= self._ping_due_at():
                self.last_ping = now
                return [Ping(ts=now)]
        return []

    def _ping_due_at(self) -> float:
        """When this side sends its next ``Ping`` (the worker's rule; the server overrides it)."""
        return self.last_ping + self.heartbeat_interval_s

    def next_tick_at(self) -> float:
        """When ``tick`` next has something to do (infinity once closed)."""
        if self.state in self._handshaking:
            return self.handshake_deadline
        if self.state is State.READY:
            return min(self._ping_due_at(), self.last_heard + self.heartbeat_timeout_s)
        return math.inf

    def close(self, reason: CloseReason, detail: str) -> list[Output]:
        """Close by local decision (e.g. shutting down); returns the ``Close`` to act on."""
        if self.state is State.CLOSED:
            return []
        return self._close(reason, detail)

    def _close(self, reason: CloseReason, detail: str) -> list[Output]:
        self.state = State.CLOSED
        self.closed = Close(reason, detail)
        return [self.closed]

    def _became_ready(self, now: float) -> None:
        self.state = State.READY
        self.last_heard = self.last_ping = now

    def _ready_frame(self, frame: Frame, accepted: tuple[type[Frame], ...]) -> list[Output]:
        """A frame once ready: pings answered, pongs are only life, the rest by direction."""
        if isinstance(frame, Ping):
            return [Pong(ts=frame.ts)]
        if isinstance(frame, Pong):
            return []
        if isinstance(frame, accepted):
            return [Received(frame)]
        return self._close(CloseReason.PROTOCOL_ERROR, f"unexpected {frame.type!r} frame")


class ServerSession(_Session):
    """The control plane's side of one worker connection."""

    _handshaking = (State.AWAITING_HELLO,)

    def __init__(self, *, now: float, heartbeat_interval_s: float, heartbeat_timeout_s: float,
                 nonce: str | None = None,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
        super().__init__(State.AWAITING_HELLO, now=now, heartbeat_interval_s=heartbeat_interval_s,
                         heartbeat_timeout_s=heartbeat_timeout_s,
                         handshake_timeout_s=handshake_timeout_s)
        self.nonce = nonce or signing.new_nonce()
        self.hello: Hello | None = None  # set once authenticated
        self._pending: Hello | None = None  # a well-formed hello waiting for its key
        # Silence after which the server probes the worker with a ping of its own: past the
        # worker's interval (its pings keep this from firing), short of the timeout.
        self.probe_after_s = (heartbeat_interval_s + heartbeat_timeout_s) / 2

    def _ping_due_at(self) -> float:
        return max(self.last_heard, self.last_ping) + self.probe_after_s

    def challenge(self) -> Challenge:
        """The first frame of the connection (the server speaks first)."""
        return Challenge(protocol_version=PROTOCOL_VERSION, nonce=self.nonce)

    def _handle(self, frame: Frame, now: float) -> list[Output]:
        if self.state is State.READY:
            if isinstance(frame, Inventory):
                return self._inventory(frame)
            return self._ready_frame(frame, TO_SERVER)
        if self._pending is not None:
            return self._close(CloseReason.PROTOCOL_ERROR, f"{frame.type!r} before the welcome")
        if not isinstance(frame, Hello):
            return self._close(CloseReason.PROTOCOL_ERROR,
                               f"expected a hello first, got {frame.type!r}")
        if frame.protocol_version not in SUPPORTED_VERSIONS:
            return self._close(CloseReason.UNSUPPORTED_VERSION,
                               f"protocol version {frame.protocol_version} is not supported; "
                               f"this control plane speaks {sorted(SUPPORTED_VERSIONS)}")
        if frame.nonce != self.nonce:
            return self._close(CloseReason.AUTH_FAILED,
                               f"worker {peer_text(frame.worker_id)} signed another connection's "
                               "challenge (a replayed hello?)")
        self._pending = frame
        return [KeyNeeded(frame.worker_id)]

    def key_found(self, public_key: str | None, now: float) -> list[Output]:
        """The enrolled public key of the worker named by ``KeyNeeded`` (None: not enrolled)."""
        hello = self._pending
        if self.state is State.CLOSED:
            return []
        if hello is None:
            raise RuntimeError("key_found without a KeyNeeded")  # a bug in the loop, not the peer
        self._pending = None
        if public_key is None:
            return self._close(CloseReason.AUTH_FAILED,
                               f"unknown worker {peer_text(hello.worker_id)}")
        message = signing.handshake_message(self.nonce, hello.worker_id)
        if not signing.verify(public_key, message, hello.signature):
            return self._close(CloseReason.AUTH_FAILED, f"the signature of worker "
                               f"{peer_text(hello.worker_id)} does not match its enrolled key")
        self.hello = hello
        self._became_ready(now)
        welcome = Welcome(worker_id=hello.worker_id, heartbeat_interval_s=self.heartbeat_interval_s,
                          heartbeat_timeout_s=self.heartbeat_timeout_s)
        return [welcome, Authenticated(hello)]

    def _inventory(self, frame: Inventory) -> list[Output]:
        models = {info.id: info for info in frame.models}
        return [InventoryUpdated(list(frame.backends), models, frame.max_concurrent)]


class WorkerSession(_Session):
    """The worker's side: answer the challenge, wait for the welcome, then keep the peer alive.

    The worker always answers with its own ``PROTOCOL_VERSION``; the server decides whether it
    speaks it (and refuses with UNSUPPORTED_VERSION if not).
    """

    _handshaking = (State.AWAITING_CHALLENGE, State.AWAITING_WELCOME)

    def __init__(self, *, now: float, worker_id: str, name: str, private_key: str,
                 max_concurrent: int, heartbeat_interval_s: float, heartbeat_timeout_s: float,
                 software_version: str = "",
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
        super().__init__(State.AWAITING_CHALLENGE, now=now,
                         heartbeat_interval_s=heartbeat_interval_s,
                         heartbeat_timeout_s=heartbeat_timeout_s,
                         handshake_timeout_s=handshake_timeout_s)
        self.worker_id = worker_id
        self.name = name
        self.private_key = private_key
        self.max_concurrent = max_concurrent
        self.software_version = software_version
        self.welcome: Welcome | None = None

    def _handle(self, frame: Frame, now: float) -> list[Output]:
        if self.state is State.READY:
            return self._ready_frame(frame, TO_WORKER)
        if self.state is State.AWAITING_CHALLENGE:
            if not isinstance(frame, Challenge):
                return self._close(CloseReason.PROTOCOL_ERROR,
                                   f"expected a challenge first, got {frame.type!r}")
            self.state = State.AWAITING_WELCOME
            signature = signing.sign(self.private_key,
                                     signing.handshake_message(frame.nonce, self.worker_id))
            return [Hello(protocol_version=PROTOCOL_VERSION, worker_id=self.worker_id,
                          name=self.name, nonce=frame.nonce, signature=signature,
                          max_concurrent=self.max_concurrent,
                          software_version=self.software_version)]
        if not isinstance(frame, Welcome):
            return self._close(CloseReason.PROTOCOL_ERROR,
                               f"expected a welcome, got {frame.type!r}")
        if frame.worker_id != self.worker_id:
            return self._close(CloseReason.PROTOCOL_ERROR,
                               f"welcomed as {frame.worker_id!r}, not {self.worker_id!r}")
        self.welcome = frame
        self._became_ready(now)
        return [Ready(frame)]

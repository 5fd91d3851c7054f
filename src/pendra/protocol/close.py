"""Why a /ws/gpu connection was closed: one table of close codes, each saying whether to retry.

The worker's reconnect loop asks ``retryable`` and nothing else: a refused key or an unsupported
protocol version ends the loop with the reason printed; everything else reconnects with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class CloseReason(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: come back later
    PROTOCOL_ERROR = 4000  # a malformed or out-of-order frame
    AUTH_FAILED = 4001  # unknown worker, wrong key, bad or replayed signature
    UNSUPPORTED_VERSION = 4002  # the worker speaks a protocol version the server does not
    HEARTBEAT_TIMEOUT = 4003  # the peer was silent past the bound
    SUPERSEDED = 4004  # the same worker id connected again; this older connection is closed
    WORKER_REMOVED = 4005  # the worker was deleted on the control plane
    HANDSHAKE_TIMEOUT = 4006  # no hello in time


@dataclass(frozen=True)
class CloseInfo:
    reason: CloseReason
    retryable: bool
    description: str


CLOSE_TABLE: dict[int, CloseInfo] = {info.reason: info for info in (
    CloseInfo(CloseReason.NORMAL, True, "closed normally"),
    CloseInfo(CloseReason.GOING_AWAY, True, "control plane is shutting down"),
    CloseInfo(CloseReason.PROTOCOL_ERROR, True, "protocol error"),
    CloseInfo(CloseReason.AUTH_FAILED, False,
              "authentication refused: check the worker id and private key"),
    CloseInfo(CloseReason.UNSUPPORTED_VERSION, False,
              "the control plane does not speak this worker's protocol version; upgrade Pendra"),
    CloseInfo(CloseReason.HEARTBEAT_TIMEOUT, True, "heartbeat timeout"),
    CloseInfo(CloseReason.SUPERSEDED, True, "a newer connection for this worker replaced this one"),
    CloseInfo(CloseReason.WORKER_REMOVED, False, "this worker was removed on the control plane"),
    CloseInfo(CloseReason.HANDSHAKE_TIMEOUT, True, "handshake timeout"),
)}


def retryable(code: int | None) -> bool:
    """Should the worker reconnect after a close with ``code``? Unknown codes: yes."""
    if code is None:
        return True
    info = CLOSE_TABLE.get(code)
    return True if info is None else info.retryable


# A close frame carries at most 123 bytes of UTF-8 reason.
CLOSE_REASON_BYTES = 123


def close_reason_text(detail: str) -> str:
    """``detail`` cut to what a close frame can carry, never mid-character."""
    return detail.encode("utf-8")[:CLOSE_REASON_BYTES].decode("utf-8", "ignore")


def describe(code: int | None) -> str:
    if code is None:
        return "connection lost"
    info = CLOSE_TABLE.get(code)
    return info.description if info else f"closed with code {code}"

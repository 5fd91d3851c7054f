"""Every frame of the /ws/gpu protocol, as strict models shared by both ends.

Rules:
- One JSON text frame per WebSocket message, one model per frame type, tagged by ``type``.
- Unknown fields and unknown types are refused (``ProtocolError``); there is exactly one parser,
  ``parse_frame``, and one serialiser, ``dump_frame``.
- ``PROTOCOL_VERSION`` travels in the challenge and the hello; a worker whose version the server does
  not support is closed with ``CloseReason.UNSUPPORTED_VERSION`` (see close.py), never crashed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pendra.errors import ProtocolError

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
# Largest frame either end accepts; an image response (base64 PNG) is the biggest legitimate one.
MAX_FRAME_BYTES = 64 * 1024 * 1024

RequestKind = Literal["chat", "embed", "image", "transcribe"]


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- handshake -------------------------------------------------------------------------------------


class Challenge(Frame):
    """Server → worker, first frame: a fresh single-use nonce to sign."""

    type: Literal["challenge"] = "challenge"
    protocol_version: int
    nonce: str


class Hello(Frame):
    """Worker → server: who I am, proof of key possession, and what I can take."""

    type: Literal["hello"] = "hello"
    protocol_version: int
    worker_id: str
    name: str
    nonce: str
    signature: str  # base64 Ed25519 signature over signing.handshake_message(nonce, worker_id)
    max_concurrent: int = Field(ge=1, le=64)
    software_version: str = ""


class Welcome(Frame):
    """Server → worker: authenticated; the liveness bounds the server will apply."""

    type: Literal["welcome"] = "welcome"
    worker_id: str
    heartbeat_interval_s: float
    heartbeat_timeout_s: float


# --- liveness -------------------------------------------------------------------------------------


class Ping(Frame):
    type: Literal["ping"] = "ping"
    ts: float


class Pong(Frame):
    type: Literal["pong"] = "pong"
    ts: float


# --- inventory --------------------------------------------------------------------------------------


class Inventory(Frame):
    """Worker → server, on connect and whenever discovery changes: backends, models and capacity."""

    type: Literal["inventory"] = "inventory"
    backends: list[dict[str, Any]]  # BackendStatus.to_dict()
    models: list[dict[str, Any]]  # ModelInfo.to_dict()
    max_concurrent: int = Field(ge=1, le=64)


# --- requests ------------------------------------------------------------------------------------------


class Request(Frame):
    """Server → worker: run one inference request (body in OpenAI shape)."""

    type: Literal["request"] = "request"
    id: str
    kind: RequestKind
    model: str
    body: dict[str, Any]


class Cancel(Frame):
    """Server → worker: the client went away; abort the backend call for ``id``."""

    type: Literal["cancel"] = "cancel"
    id: str


class Chunk(Frame):
    """Worker → server: one piece of the response (an OpenAI chunk, or the whole response)."""

    type: Literal["chunk"] = "chunk"
    id: str
    data: dict[str, Any]


class End(Frame):
    """Worker → server: the request finished; usage for the usage record."""

    type: Literal["end"] = "end"
    id: str
    usage: dict[str, int] = Field(default_factory=dict)
    finish_reason: str | None = None


class Error(Frame):
    """Worker → server: the request failed (before or after its first chunk)."""

    type: Literal["error"] = "error"
    id: str
    status: int
    message: str
    kind: str = "backend_error"
    # For a passing outage (the backend is down or restarting): when the client may try again.
    retry_after_s: float | None = None


# --- model operations -------------------------------------------------------------------------------


class Install(Frame):
    """Server → worker: install ``model`` (backend-native tag) into ``backend``."""

    type: Literal["install"] = "install"
    op_id: str
    model: str
    backend: str = "ollama"


class Uninstall(Frame):
    type: Literal["uninstall"] = "uninstall"
    op_id: str
    model: str
    backend: str = "ollama"


class CancelOp(Frame):
    """Server → worker: stop a running install."""

    type: Literal["cancel_op"] = "cancel_op"
    op_id: str


class Progress(Frame):
    type: Literal["progress"] = "progress"
    op_id: str
    status: str
    completed: int = 0
    total: int = 0


class OpDone(Frame):
    type: Literal["done"] = "done"
    op_id: str


class OpFailed(Frame):
    type: Literal["failed"] = "failed"
    op_id: str
    message: str
    status: int = 500


AnyFrame = Annotated[
    Union[Challenge, Hello, Welcome, Ping, Pong, Inventory, Request, Cancel, Chunk, End, Error,
          Install, Uninstall, CancelOp, Progress, OpDone, OpFailed],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyFrame)

FRAME_TYPES: tuple[type[Frame], ...] = (
    Challenge, Hello, Welcome, Ping, Pong, Inventory, Request, Cancel, Chunk, End, Error,
    Install, Uninstall, CancelOp, Progress, OpDone, OpFailed)


def parse_frame(raw: str | bytes) -> Frame:
    """The one parser: text → frame model. Raises ProtocolError naming what is wrong."""
    if isinstance(raw, bytes | bytearray):
        if len(raw) > MAX_FRAME_BYTES:
            raise ProtocolError("frame too large")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("frame is not UTF-8") from exc
    if len(raw) > MAX_FRAME_BYTES:
        raise ProtocolError("frame too large")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or "type" not in data:
        raise ProtocolError("frame must be a JSON object with a \"type\"")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "frame"
        raise ProtocolError(f"bad {data.get('type')!r} frame: {where}: {first.get('msg')}") from exc


def dump_frame(frame: Frame) -> str:
    return frame.model_dump_json()

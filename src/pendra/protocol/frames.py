"""Every frame of the /ws/gpu protocol, as strict models shared by both ends.

Rules:
- One JSON text frame per WebSocket message, one model per frame type, tagged by ``type``.
- Unknown fields and unknown types are refused (``ProtocolError``); there is exactly one parser,
  ``parse_frame``, and one serialiser, ``dump_frame``. Parsing is strict JSON (a string is never
  taken for a number), text must be valid Unicode, nesting is bounded by the JSON parser, and every
  field has a bound: identifiers and counts out of range are refused, token counts are clamped to
  ``MAX_TOKEN_COUNT``, and free text (error messages) is clipped.
- A frame is at most ``max_bytes``: ``HANDSHAKE_FRAME_BYTES`` until the peer has authenticated
  (the socket layer enforces the same bound before reading a frame's payload), then
  ``MAX_FRAME_BYTES``; but a frame over ``LARGE_FRAME_BYTES`` must be a ``request``, a ``chunk``
  or a ``chunks`` (the only frames a client's body or a backend's answer makes large) in
  ``dump_frame``'s form, which starts with its type — checked before parsing, so a huge inventory
  costs nothing to refuse. What a refusal says about the frame is cut (peer_text.py).
- ``chunks`` (version 3) carries, in order, the pieces of one request's answer that were waiting
  to be sent together (``coalesce`` builds them): 1 to ``MAX_CHUNKS_PER_FRAME`` JSON objects, each
  exactly what a ``chunk``'s ``data`` would be. A run of one stays a ``chunk``.
- ``dump_frame`` writes the hot frames (``chunk``, ``chunks``, ``end``) with orjson and every other
  frame, or one orjson refuses (an integer past 64 bits, text that is not valid Unicode, nesting
  past its depth), with pydantic: the output parses to the same frame either way.
- Parsing is pydantic's strict ``validate_json``, except for the hot frames (``chunk``, ``chunks``,
  ``end``) in ``dump_frame``'s form: those are read by pydantic's own JSON parser
  (``pydantic_core.from_json``: the same grammar, nesting limit, Unicode and number rules) and
  checked by hand against the same bounds as their models (``_hot_frame``). Anything that check
  does not accept outright — a bound crossed, a field missing, extra or of the wrong type, JSON
  the parser refuses — goes to ``validate_json``, which refuses it with the usual message, so the
  outcome and the refusal are the same either way; only the cost differs (a ``chunks`` frame of
  20 pieces: ~3x less; validating every value of ``dict[str, Any]`` was most of it).
- A model operation ends with ``done`` or ``failed``, and its outcome is typed (``outcome``:
  succeeded, failed or cancelled): a ``failed`` frame with ``CANCELLED_STATUS`` is a cancellation,
  any other status a failure; the message is for people and is never compared.
- ``PROTOCOL_VERSION`` travels in the challenge and the hello; a worker whose version the server does
  not support is closed with ``CloseReason.UNSUPPORTED_VERSION`` (see close.py), never crashed.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import from_json, to_json

from pendra.errors import ProtocolError
from pendra.protocol.inventory import MAX_BACKENDS, MAX_MODELS, BackendStatus, ModelInfo
from pendra.protocol.peer_text import ClippedText, peer_text

# 2: error frames may carry retry_after_s (a version-1 control plane would refuse the field, so a
# version-2 worker is told UNSUPPORTED_VERSION there instead). 3: the worker may send ``chunks``
# (several pieces of one answer in one frame). Version-1 and version-2 workers' frames are all
# valid version-3 frames, so this control plane still takes them. 4: the ``complete`` request kind
# (a raw text completion, OpenAI's legacy Completions); a ``transcribe`` request carries the
# uploaded audio base64 in its body and is answered in protocol/transcription.py's shape; an
# ``error`` frame may name the request field at fault (``param``). A worker below 4 is never sent
# a ``complete`` or a transcription (``KIND_SINCE``). Frames of versions 1 to 3 are all valid
# version-4 frames.
PROTOCOL_VERSION = 4
SUPPORTED_VERSIONS = frozenset({1, 2, 3, 4})
# Largest frame either end accepts once the peer is authenticated: a request carries a client body
# of up to max_body_bytes (32 MiB by default) and an image response (base64 PNGs) is the biggest
# answer.
MAX_FRAME_BYTES = 64 * 1024 * 1024
# Largest frame before authentication: a hello is a few hundred bytes; a stranger gets no more.
HANDSHAKE_FRAME_BYTES = 4 * 1024
# Largest frame of any type but request, chunk and chunks: a full inventory (2,000 models) is ~2 MB.
LARGE_FRAME_BYTES = 4 * 1024 * 1024
# How a large frame must begin: dump_frame writes the type first, without spaces.
_LARGE_FRAME_STARTS = ('{"type":"request",', '{"type":"chunk",', '{"type":"chunks",')
# Pieces in one ``chunks`` frame: a burst of tokens read from the backend at once is rarely more
# than a few dozen; the bound keeps one frame's list (and the SSE write it becomes) small.
MAX_CHUNKS_PER_FRAME = 256
# Encoded data bytes the worker puts in one ``chunks`` frame before starting another: far below
# LARGE_FRAME_BYTES, so a coalesced frame is never a large one unless a single piece is.
COALESCE_BYTES = 256 * 1024
# Token counts above this are clamped (the usage table's integer columns hold 2**31 - 1).
MAX_TOKEN_COUNT = 2**31 - 1
# Bytes of an install: clamped, like token counts (a petabyte).
MAX_PROGRESS_BYTES = 2**50
# Status of the ``failed`` frame of an operation the control plane cancelled (nginx's "client
# closed request"); no other failure is sent with it, so it alone says "cancelled".
CANCELLED_STATUS = 499

RequestKind = Literal["chat", "complete", "embed", "image", "transcribe"]
# The protocol version that introduced a request kind (the others exist since version 1): the
# control plane sends a kind only to workers whose hello carries at least that version.
KIND_SINCE: dict[str, int] = {"complete": 4, "transcribe": 4}


def speaks(protocol_version: int, kind: str) -> bool:
    """Whether a peer of ``protocol_version`` knows request ``kind``."""
    return protocol_version >= KIND_SINCE.get(kind, 1)
# Ids the two ends make for requests and operations (req_<hex>, op_<hex>).
FrameId = Annotated[str, Field(min_length=1, max_length=64)]
# Enrolled worker ids are wrk-<hex>; accept any short id of that alphabet.
WorkerId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
ModelName = Annotated[str, Field(min_length=1, max_length=256)]
Token = Annotated[str, Field(min_length=1, max_length=256)]
ErrorKind = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]
Seconds = Annotated[float, Field(ge=0, le=86_400)]
# How many requests one worker may take at once: the hello and inventory frames are held to it,
# and so is the worker's own MAX_CONCURRENT setting (config.py reads these bounds from here).
MAX_CONCURRENT_MIN, MAX_CONCURRENT_MAX = 1, 64


def _clamp(low: int, high: int) -> AfterValidator:
    return AfterValidator(lambda value: min(max(value, low), high))


TokenCount = Annotated[int, _clamp(0, MAX_TOKEN_COUNT)]
ByteCount = Annotated[int, _clamp(0, MAX_PROGRESS_BYTES)]
UsageKey = Literal["prompt_tokens", "completion_tokens", "total_tokens"]


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- handshake -------------------------------------------------------------------------------------


class Challenge(Frame):
    """Server → worker, first frame: a fresh single-use nonce to sign."""

    type: Literal["challenge"] = "challenge"
    protocol_version: int
    nonce: Token


class Hello(Frame):
    """Worker → server: who I am, proof of key possession, and what I can take."""

    type: Literal["hello"] = "hello"
    protocol_version: int
    worker_id: WorkerId
    # The worker's own idea of its name, for its logs; the control plane shows the enrolled name.
    name: Annotated[str, Field(max_length=128)]
    nonce: Token
    signature: Token  # base64 Ed25519 signature over signing.handshake_message(nonce, worker_id)
    max_concurrent: int = Field(ge=MAX_CONCURRENT_MIN, le=MAX_CONCURRENT_MAX)
    software_version: Annotated[str, Field(max_length=64)] = ""


class Welcome(Frame):
    """Server → worker: authenticated; the liveness bounds the server will apply."""

    type: Literal["welcome"] = "welcome"
    worker_id: WorkerId
    heartbeat_interval_s: Seconds
    heartbeat_timeout_s: Seconds


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
    backends: list[BackendStatus] = Field(max_length=MAX_BACKENDS)
    models: list[ModelInfo] = Field(max_length=MAX_MODELS)
    max_concurrent: int = Field(ge=MAX_CONCURRENT_MIN, le=MAX_CONCURRENT_MAX)


# --- requests ------------------------------------------------------------------------------------------


class Request(Frame):
    """Server → worker: run one inference request (body in OpenAI shape)."""

    type: Literal["request"] = "request"
    id: FrameId
    kind: RequestKind
    model: ModelName
    body: dict[str, Any]


class Cancel(Frame):
    """Server → worker: the client went away; abort the backend call for ``id``."""

    type: Literal["cancel"] = "cancel"
    id: FrameId


class Chunk(Frame):
    """Worker → server: one piece of the response (an OpenAI chunk, or the whole response)."""

    type: Literal["chunk"] = "chunk"
    id: FrameId
    data: dict[str, Any]


class Chunks(Frame):
    """Worker → server (version 3): pieces of one response, in order, sent together."""

    type: Literal["chunks"] = "chunks"
    id: FrameId
    data: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_CHUNKS_PER_FRAME)


class End(Frame):
    """Worker → server: the request finished; usage for the usage record."""

    type: Literal["end"] = "end"
    id: FrameId
    usage: dict[UsageKey, TokenCount] = Field(default_factory=dict)
    finish_reason: Annotated[str, Field(max_length=64)] | None = None


class Error(Frame):
    """Worker → server: the request failed (before or after its first chunk)."""

    type: Literal["error"] = "error"
    id: FrameId
    status: int = Field(ge=400, le=599)
    message: ClippedText
    kind: ErrorKind = "backend_error"
    # For a passing outage (the backend is down or restarting): when the client may try again.
    retry_after_s: Seconds | None = None
    # Version 4: the request field at fault when the worker refused the client's input (OpenAI's
    # error ``param``, e.g. ``suffix``); older workers never send it.
    param: Annotated[str, Field(max_length=128)] | None = None


# --- model operations -------------------------------------------------------------------------------


class Install(Frame):
    """Server → worker: install ``model`` (backend-native tag) into ``backend``."""

    type: Literal["install"] = "install"
    op_id: FrameId
    model: ModelName
    backend: Annotated[str, Field(max_length=32)] = "ollama"


class Uninstall(Frame):
    type: Literal["uninstall"] = "uninstall"
    op_id: FrameId
    model: ModelName
    backend: Annotated[str, Field(max_length=32)] = "ollama"


class CancelOp(Frame):
    """Server → worker: stop a running install."""

    type: Literal["cancel_op"] = "cancel_op"
    op_id: FrameId


class Progress(Frame):
    type: Literal["progress"] = "progress"
    op_id: FrameId
    status: Annotated[str, Field(max_length=256)]
    completed: ByteCount = 0
    total: ByteCount = 0


class OpOutcome(StrEnum):
    """How a model operation ended (the install states in the store use the same words)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OpDone(Frame):
    type: Literal["done"] = "done"
    op_id: FrameId

    @property
    def outcome(self) -> OpOutcome:
        return OpOutcome.SUCCEEDED


class OpFailed(Frame):
    """Worker → server: the operation failed, or was cancelled (``status`` is
    ``CANCELLED_STATUS``; build it with ``cancelled``)."""

    type: Literal["failed"] = "failed"
    op_id: FrameId
    message: ClippedText
    status: int = Field(default=500, ge=400, le=599)

    @classmethod
    def cancelled(cls, op_id: str) -> "OpFailed":
        return cls(op_id=op_id, message="cancelled", status=CANCELLED_STATUS)

    @property
    def outcome(self) -> OpOutcome:
        return OpOutcome.CANCELLED if self.status == CANCELLED_STATUS else OpOutcome.FAILED


AnyFrame = Annotated[
    Union[Challenge, Hello, Welcome, Ping, Pong, Inventory, Request, Cancel, Chunk, Chunks, End,
          Error, Install, Uninstall, CancelOp, Progress, OpDone, OpFailed],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyFrame)

FRAME_TYPES: tuple[type[Frame], ...] = (
    Challenge, Hello, Welcome, Ping, Pong, Inventory, Request, Cancel, Chunk, Chunks, End, Error,
    Install, Uninstall, CancelOp, Progress, OpDone, OpFailed)


def parse_frame(raw: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """The one parser: text → frame model. Raises ProtocolError naming what is wrong (cut)."""
    if len(raw) > max_bytes:
        raise ProtocolError(f"frame of {len(raw)} bytes is over the limit of {max_bytes}")
    if len(raw) > LARGE_FRAME_BYTES:
        head = raw[:32].decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) \
            else raw[:32]
        if not head.startswith(_LARGE_FRAME_STARTS):
            raise ProtocolError(f"a frame over {LARGE_FRAME_BYTES} bytes must be a request or a "
                                "chunk or chunks frame, written with its type first")
    if raw.startswith(_HOT_STARTS_TEXT if isinstance(raw, str) else _HOT_STARTS_BYTES):
        frame = _hot_frame(raw)
        if frame is not None:
            return frame
    try:
        return _ADAPTER.validate_json(raw, strict=True)
    except ValidationError as exc:
        raise ProtocolError(_refusal(exc)) from exc


# The hot frames as dump_frame writes them ('{"type":"chunk' also starts every chunks frame).
_HOT_STARTS_TEXT = ('{"type":"chunk', '{"type":"end"')
_HOT_STARTS_BYTES = tuple(start.encode() for start in _HOT_STARTS_TEXT)
_CHUNK_KEYS = frozenset(("type", "id", "data"))
_END_KEYS = frozenset(("type", "id", "usage", "finish_reason"))
_USAGE_KEYS = frozenset(("prompt_tokens", "completion_tokens", "total_tokens"))
_END_FINISH_MAX = 64
_INT64 = 2**63  # integers pydantic's parser may hand over as such; anything bigger: pydantic decides
_new = object.__new__
_set = object.__setattr__


def _built(cls: type[Frame], values: dict[str, Any]) -> Frame:
    """A frame model holding ``values``, which have been checked against its fields (what
    validation would have made of them, without validating again)."""
    frame = _new(cls)
    _set(frame, "__dict__", values)
    _set(frame, "__pydantic_fields_set__", set(values))
    _set(frame, "__pydantic_extra__", None)
    _set(frame, "__pydantic_private__", None)
    return frame


def _frame_id(value: Any) -> bool:
    return type(value) is str and 1 <= len(value) <= 64


def _hot_frame(raw: str | bytes) -> Frame | None:
    """A ``chunk``, ``chunks`` or ``end`` frame that meets every bound of its model, or None: let
    ``validate_json`` decide (and word the refusal). Never accepts what validation refuses."""
    try:
        value = from_json(raw)
    except ValueError:
        return None
    if type(value) is not dict:
        return None
    kind = value.get("type")
    if kind == "chunk":
        if value.keys() == _CHUNK_KEYS and _frame_id(value["id"]) and type(value["data"]) is dict:
            return _built(Chunk, {"type": kind, "id": value["id"], "data": value["data"]})
    elif kind == "chunks":
        data = value.get("data")
        if (value.keys() == _CHUNK_KEYS and _frame_id(value["id"]) and type(data) is list
                and 1 <= len(data) <= MAX_CHUNKS_PER_FRAME
                and all(type(item) is dict for item in data)):
            return _built(Chunks, {"type": kind, "id": value["id"], "data": data})
    elif kind == "end":
        usage = value.get("usage", {})
        finish = value.get("finish_reason")
        if (value.keys() <= _END_KEYS and _frame_id(value.get("id")) and type(usage) is dict
                and usage.keys() <= _USAGE_KEYS
                and all(type(count) is int and -_INT64 <= count < _INT64
                        for count in usage.values())
                and (finish is None or (type(finish) is str and len(finish) <= _END_FINISH_MAX))):
            clamped = {key: min(max(count, 0), MAX_TOKEN_COUNT) for key, count in usage.items()}
            frame = _built(End, {"type": kind, "id": value["id"], "usage": clamped,
                                 "finish_reason": finish})
            _set(frame, "__pydantic_fields_set__", set(value))
            return frame
    return None


def _refusal(exc: ValidationError) -> str:
    """What is wrong with a frame, in one bounded line (never the peer's input itself)."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid", "type": ""}
    if first["type"] == "json_invalid":
        return f"frame is not valid JSON: {peer_text(first['msg'])}"
    if first["type"] in ("union_tag_not_found", "union_tag_invalid", "model_attributes_type",
                         "dict_type", "model_type"):
        return "frame must be a JSON object whose \"type\" is a frame type"
    where = ".".join(str(part) for part in first["loc"]) or "frame"
    return f"bad frame: {peer_text(where, 80)}: {peer_text(first['msg'])}"


def dump_frame(frame: Frame) -> str:
    """The one serialiser: frame model → text, with its type first (see the module rules)."""
    return dump_frame_bytes(frame).decode()


def dump_frame_bytes(frame: Frame) -> bytes:
    """``dump_frame`` as UTF-8 bytes (what a socket sends as a text message)."""
    if type(frame) is Chunk:
        return _chunk_frame(frame.id, [_json(frame.data)])  # type: ignore[attr-defined]
    if type(frame) is Chunks:
        pieces = [_json(item) for item in frame.data]  # type: ignore[attr-defined]
        return _chunk_frame(frame.id, pieces, many=True)  # type: ignore[attr-defined]
    if type(frame) is End:
        try:
            return b'{"type":"end",' + orjson.dumps(
                {"id": frame.id, "usage": frame.usage,  # type: ignore[attr-defined]
                 "finish_reason": frame.finish_reason})[1:]  # type: ignore[attr-defined]
        except orjson.JSONEncodeError:
            pass  # pydantic decides
    return frame.model_dump_json().encode()


def _json(data: Any) -> bytes:
    """Compact JSON of a frame's payload: orjson, or pydantic's encoder for what orjson refuses
    (which raises as ``model_dump_json`` would when it refuses too)."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return to_json(data)


def _chunk_frame(request_id: str, encoded: list[bytes], *, many: bool = False) -> bytes:
    """A ``chunk`` frame for one encoded piece, a ``chunks`` frame for several (or ``many``)."""
    if len(encoded) == 1 and not many:
        return b'{"type":"chunk","id":' + orjson.dumps(request_id) + b',"data":' + encoded[0] + b"}"
    return b'{"type":"chunks","id":' + orjson.dumps(request_id) + b',"data":[' \
        + b",".join(encoded) + b"]}"


# A frame encoded for the send queue: (request id, its data) for a chunk, (None, the whole frame)
# for anything else. Encoding happens when the frame is queued, so its sender sees the error.
Piece = tuple[str | None, bytes]


def piece(frame: Frame) -> Piece:
    if type(frame) is Chunk:
        return frame.id, _json(frame.data)  # type: ignore[attr-defined]
    return None, dump_frame_bytes(frame)


def coalesce(pieces: Iterable[Piece]) -> list[bytes]:
    """Frames waiting to be sent, in order, with each run of consecutive chunks of one request
    merged into ``chunks`` frames of at most ``MAX_CHUNKS_PER_FRAME`` pieces and about
    ``COALESCE_BYTES`` of data (a run of one stays a ``chunk``)."""
    out: list[bytes] = []
    run_id: str | None = None
    run: list[bytes] = []
    size = 0
    for request_id, encoded in pieces:
        if run and (request_id != run_id or len(run) >= MAX_CHUNKS_PER_FRAME
                    or size >= COALESCE_BYTES):
            assert run_id is not None
            out.append(_chunk_frame(run_id, run))
            run, size = [], 0
        if request_id is None:
            out.append(encoded)
            continue
        run_id = request_id
        run.append(encoded)
        size += len(encoded)
    if run:
        assert run_id is not None
        out.append(_chunk_frame(run_id, run))
    return out

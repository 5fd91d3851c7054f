"""The /ws/gpu session state machines, wired together in memory with a fake clock."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pendra.errors import ProtocolError
from pendra.protocol import signing
from pendra.protocol.close import CLOSE_TABLE, CloseReason, retryable
from pendra.protocol.frames import (FRAME_TYPES, HANDSHAKE_FRAME_BYTES, LARGE_FRAME_BYTES,
                                    MAX_TOKEN_COUNT, Challenge, Chunk, End, Error, Frame, Hello,
                                    Inventory, Ping, Pong, Progress, Request, Welcome, dump_frame,
                                    parse_frame)
from pendra.protocol.inventory import MAX_MODELS, BackendStatus, ModelInfo
from pendra.protocol.peer_text import PEER_TEXT_CHARS, peer_text
from pendra.protocol.session import (HANDSHAKE_TIMEOUT_S, Authenticated, Close, InventoryUpdated,
                                     KeyNeeded, Output, Ready, Received, ServerSession,
                                     WorkerSession)

ROOT = Path(__file__).resolve().parents[2]


def pair(private: str, worker_id: str = "wrk-1") -> tuple[ServerSession, WorkerSession]:
    server = ServerSession(heartbeat_interval_s=1, heartbeat_timeout_s=3, now=0)
    worker = WorkerSession(worker_id=worker_id, name="w", private_key=private, max_concurrent=2,
                           software_version="t", heartbeat_interval_s=1, heartbeat_timeout_s=3, now=0)
    return server, worker


def present(server: ServerSession, hello: Frame, public: str | None) -> list[Output]:
    """The server's loop: hand it the hello and, when it asks for a key, look one up."""
    outputs = server.receive(hello, 0)
    if outputs and isinstance(outputs[0], KeyNeeded):
        assert outputs == [KeyNeeded(hello.worker_id)]  # type: ignore[attr-defined]
        return server.key_found(public, 0)
    return outputs


def handshake(server: ServerSession, worker: WorkerSession, public: str | None) -> list[Output]:
    [hello] = worker.receive(server.challenge(), 0)
    return present(server, hello, public)


def closed(outputs: list[Output]) -> Close:
    """The session's verdict: exactly one output, a Close."""
    [verdict] = outputs
    assert isinstance(verdict, Close)
    return verdict


def test_signing_round_trip_and_tampering() -> None:
    """A signature verifies only for the same key, nonce and worker id."""
    private, public = signing.generate_keypair()
    message = signing.handshake_message("nonce", "wrk-1")
    signature = signing.sign(private, message)
    assert signing.verify(public, message, signature)
    assert not signing.verify(public, signing.handshake_message("nonce2", "wrk-1"), signature)
    assert not signing.verify(public, signing.handshake_message("nonce", "wrk-2"), signature)
    assert not signing.verify(signing.generate_keypair()[1], message, signature)
    assert not signing.verify("not base64!", message, signature)
    assert signing.public_key_of(private) == public


def test_happy_handshake_inventory_and_heartbeats() -> None:
    """Challenge → hello → welcome + Authenticated; the worker is Ready; then an inventory becomes
    an event, application frames are Received, pings flow and answers keep the peer alive."""
    private, public = signing.generate_keypair()
    server, worker = pair(private)
    welcome, authenticated = handshake(server, worker, public)
    assert isinstance(welcome, Welcome) and welcome.heartbeat_timeout_s == 3
    assert isinstance(authenticated, Authenticated) and authenticated.hello.worker_id == "wrk-1"
    assert server.ready and server.hello == authenticated.hello
    assert worker.receive(welcome, 0) == [Ready(welcome)] and worker.ready
    model = {"id": "llama3.2:latest", "backend": "ollama", "context_length": 8192}
    [updated] = server.receive(Inventory(backends=[], models=[model], max_concurrent=2), 0.1)
    assert isinstance(updated, InventoryUpdated) and list(updated.models) == ["llama3.2:latest"]
    assert updated.models["llama3.2:latest"].context_length == 8192
    end = End(id="req_1", usage={})
    assert server.receive(end, 0.2) == [Received(end)]
    assert server.tick(1.0) == []  # the worker pings every interval; the server only answers
    [worker_ping] = worker.tick(1.0)
    assert isinstance(worker_ping, Ping)
    [answer] = server.receive(worker_ping, 1.0)
    assert isinstance(answer, Pong) and worker.receive(answer, 1.0) == []
    # A silent worker is probed half-way between the interval and the timeout (2 s after 1.0).
    assert server.next_tick_at() == 3.0 and server.tick(2.9) == []
    [ping] = server.tick(3.0)
    assert isinstance(ping, Ping)
    [pong] = worker.receive(ping, 3.0)
    assert isinstance(pong, Pong) and server.receive(pong, 3.1) == []
    assert server.next_tick_at() == 5.1  # the next probe comes before the silence bound (6.1)


def test_unknown_worker_wrong_key_and_old_version_are_refused() -> None:
    """Unknown id and a key that is not enrolled fail auth; another protocol version is 4002."""
    private, public = signing.generate_keypair()
    server, worker = pair(private)
    assert closed(handshake(server, worker, None)).reason is CloseReason.AUTH_FAILED
    server, worker = pair(private)
    verdict = closed(handshake(server, worker, signing.generate_keypair()[1]))
    assert verdict.reason is CloseReason.AUTH_FAILED and "does not match" in verdict.detail
    server, _ = pair(private)
    old = Hello(protocol_version=99, worker_id="wrk-1", name="w", nonce=server.nonce,
                signature="x", max_concurrent=1)
    verdict = closed(present(server, old, public))
    assert verdict.reason is CloseReason.UNSUPPORTED_VERSION and not retryable(verdict.reason)
    assert server.receive(Ping(ts=0), 1) == []  # a closed session ignores everything


def test_replayed_hello_is_refused() -> None:
    """A hello captured on one connection fails on the next: its nonce is not the new challenge."""
    private, public = signing.generate_keypair()
    first, worker = pair(private)
    [captured] = worker.receive(first.challenge(), 0)
    assert isinstance(present(first, captured, public)[0], Welcome)
    second = ServerSession(heartbeat_interval_s=1, heartbeat_timeout_s=3, now=0)
    verdict = closed(present(second, captured, public))
    assert verdict.reason is CloseReason.AUTH_FAILED and "replay" in verdict.detail


def test_out_of_order_and_timeouts() -> None:
    """A non-hello first frame is a protocol error, so is a frame in the wrong direction and
    garbage; silence past the bounds closes the session."""
    private, public = signing.generate_keypair()
    server, _ = pair(private)
    assert closed(server.receive(Ping(ts=0), 0)).reason is CloseReason.PROTOCOL_ERROR
    server, _ = pair(private)
    assert closed(server.receive_raw("{not json", 0)).reason is CloseReason.PROTOCOL_ERROR
    server, _ = pair(private)
    assert server.next_tick_at() == HANDSHAKE_TIMEOUT_S
    assert closed(server.tick(HANDSHAKE_TIMEOUT_S + 1)).reason is CloseReason.HANDSHAKE_TIMEOUT
    server, worker = pair(private)
    handshake(server, worker, public)
    wrong_way = Request(id="req_1", kind="chat", model="m", body={})
    assert closed(server.receive(wrong_way, 1)).reason is CloseReason.PROTOCOL_ERROR
    server, worker = pair(private)
    handshake(server, worker, public)
    assert isinstance(server.tick(2.0)[0], Ping)  # the probe goes out, nothing comes back
    assert closed(server.tick(3.5)).reason is CloseReason.HEARTBEAT_TIMEOUT
    worker2 = WorkerSession(worker_id="wrk-1", name="w", private_key=private, max_concurrent=1,
                            software_version="", heartbeat_interval_s=1, heartbeat_timeout_s=3, now=0)
    assert closed(worker2.receive(Ping(ts=0), 0)).reason is CloseReason.PROTOCOL_ERROR


def test_welcome_for_another_worker_and_local_close() -> None:
    """A worker refuses a welcome naming someone else; ``close`` ends a session once."""
    private, public = signing.generate_keypair()
    server, worker = pair(private)
    worker.receive(server.challenge(), 0)
    other = Welcome(worker_id="wrk-2", heartbeat_interval_s=1, heartbeat_timeout_s=3)
    assert closed(worker.receive(other, 0)).reason is CloseReason.PROTOCOL_ERROR
    server, worker = pair(private)
    handshake(server, worker, public)
    assert closed(server.close(CloseReason.GOING_AWAY, "bye")).reason is CloseReason.GOING_AWAY
    assert server.close(CloseReason.GOING_AWAY, "bye") == [] and server.next_tick_at() == math.inf


def test_frames_are_strict() -> None:
    """Unknown types, unknown fields and bad JSON are refused by the one parser."""
    frame = Inventory(backends=[], models=[], max_concurrent=2)
    assert parse_frame(dump_frame(frame)) == frame
    for raw in ('{"type": "nope"}', '{"type": "ping", "ts": 1, "extra": 1}', "not json", "[]",
                '{"type": "hello"}'):
        with pytest.raises(ProtocolError):
            parse_frame(raw)
    assert isinstance(parse_frame(dump_frame(Challenge(protocol_version=1, nonce="n"))), Challenge)


def _inventory(backends: list[object], models: list[object]) -> str:
    import json
    return json.dumps({"type": "inventory", "backends": backends, "models": models,
                       "max_concurrent": 1})


GOOD_BACKEND = {"kind": "ollama", "endpoint": "http://localhost:11434", "verified": True}
GOOD_MODEL = {"id": "llama3.2:latest", "backend": "ollama", "context_length": 8192,
              "capabilities": ["completion"]}


@pytest.mark.parametrize("backends, models", [
    ([GOOD_BACKEND], [{**GOOD_MODEL, "modified_at": 123}]),
    ([GOOD_BACKEND], [{**GOOD_MODEL, "capabilities": [{}]}]),
    ([GOOD_BACKEND], [{**GOOD_MODEL, "context_length": "abc"}]),
    ([GOOD_BACKEND], [{**GOOD_MODEL, "context_length": -1}]),
    ([GOOD_BACKEND], [{**GOOD_MODEL, "id": ""}]),
    ([GOOD_BACKEND], [{**GOOD_MODEL, "id": "m" * 300}]),
    ([GOOD_BACKEND], [{**GOOD_MODEL, "surprise": 1}]),
    ([{}], [GOOD_MODEL]),
    ([{**GOOD_BACKEND, "verified": "yes"}], [GOOD_MODEL]),
    ([GOOD_BACKEND], [{**GOOD_MODEL, "id": f"m{i}"} for i in range(MAX_MODELS + 1)]),
])
def test_inventory_is_typed_and_bounded(backends: list[object], models: list[object]) -> None:
    """An inventory whose fields have the wrong type, are out of range or too many is refused as
    a whole with PROTOCOL_ERROR; a good one arrives as typed values."""
    private, public = signing.generate_keypair()
    server, worker = pair(private)
    handshake(server, worker, public)
    [event] = server.receive_raw(_inventory([GOOD_BACKEND], [GOOD_MODEL]), 1)
    assert isinstance(event, InventoryUpdated)
    assert event.backends == [BackendStatus("ollama", "http://localhost:11434", True)]
    assert event.models["llama3.2:latest"].types == ("chat",)
    verdict = closed(server.receive_raw(_inventory(backends, models), 2))
    assert verdict.reason is CloseReason.PROTOCOL_ERROR and "inventory" in verdict.detail
    assert len(verdict.detail) < 400


def test_informational_text_is_clipped_and_counts_clamped() -> None:
    """Free text a worker sends is clipped rather than refused; token and byte counts are clamped
    into range, so one absurd number never reaches the usage table."""
    end = parse_frame('{"type": "end", "id": "r", "usage": {"prompt_tokens": 1' + "0" * 30
                      + ', "completion_tokens": -5}}')
    assert isinstance(end, End)
    assert end.usage == {"prompt_tokens": MAX_TOKEN_COUNT, "completion_tokens": 0}
    error = parse_frame(dump_frame(Error(id="r", status=500, message="x" * 100_000)))
    assert isinstance(error, Error) and len(error.message) == 4096
    status = BackendStatus("ollama", "http://h", False, reason="why " * 10_000, version="v" * 999)
    assert len(status.reason) == 4096 and len(status.version) == 128
    for raw in ('{"type": "end", "id": "r", "usage": {"prompt_tokens": "7"}}',
                '{"type": "end", "id": "r", "usage": {"tokens": 7}}',
                '{"type": "error", "id": "r", "status": 200, "message": "m"}',
                '{"type": "progress", "op_id": "o", "status": "s", "completed": "1"}'):
        with pytest.raises(ProtocolError):
            parse_frame(raw)
    progress = parse_frame('{"type": "progress", "op_id": "o", "status": "s", "completed": 5, '
                           '"total": -1}')
    assert isinstance(progress, Progress) and (progress.completed, progress.total) == (5, 0)


def test_strangers_frames_are_small_and_their_text_is_cut() -> None:
    """Before authentication a frame is at most HANDSHAKE_FRAME_BYTES; a refusal never repeats
    more than a bounded part of what the peer sent, whatever its size."""
    private, public = signing.generate_keypair()
    server, worker = pair(private)
    [hello] = worker.receive(server.challenge(), 0)
    big = dump_frame(hello)[:-1] + ', "pad": "' + "x" * HANDSHAKE_FRAME_BYTES + '"}'
    verdict = closed(server.receive_raw(big, 0))
    assert verdict.reason is CloseReason.PROTOCOL_ERROR and "over the limit" in verdict.detail
    server, _ = pair(private)
    huge_id = '{"type": "hello", "protocol_version": 1, "worker_id": "' + "w" * 3000 + '"}'
    verdict = closed(server.receive_raw(huge_id, 0))
    assert verdict.reason is CloseReason.PROTOCOL_ERROR and len(verdict.detail) < 400
    server, _ = pair(private)
    verdict = closed(server.receive_raw('{"type": "' + "t" * 3000 + '"}', 0))
    assert "t" * 100 not in verdict.detail
    assert peer_text("a\nb") == "'a\\nb'"
    assert len(peer_text("z" * 10**6)) < PEER_TEXT_CHARS + 40


def test_only_requests_and_chunks_may_be_large() -> None:
    """Past LARGE_FRAME_BYTES only a request or a chunk in dump_frame's form is parsed: a huge
    inventory (or a chunk with its type last) is refused before any parsing."""
    big = "x" * (LARGE_FRAME_BYTES + 1)
    for frame in (Chunk(id="r", data={"b64_json": big}),
                  Request(id="r", kind="chat", model="m", body={"prompt": big})):
        assert parse_frame(dump_frame(frame)) == frame
        assert parse_frame(dump_frame(frame).encode()) == frame
    inventory = _inventory([GOOD_BACKEND], [{**GOOD_MODEL, "id": f"m{i}", "family": "f" * 100}
                                            for i in range(LARGE_FRAME_BYTES // 100)])
    for raw in (inventory, '{"id": "r", "data": {"b64_json": "' + big + '"}, "type": "chunk"}'):
        with pytest.raises(ProtocolError, match="must be a request or a chunk"):
            parse_frame(raw)


def test_the_worker_keeps_models_that_fit_the_protocol() -> None:
    """ModelInfo checks its bounds where the worker makes it, so a worker never sends an
    inventory the control plane would refuse."""
    with pytest.raises(ValueError):
        ModelInfo(id="m" * 300, backend="ollama")
    with pytest.raises(ValueError):
        ModelInfo(id="m", backend="ollama", context_length=0)
    assert ModelInfo("m", "ollama", capabilities=("completion", "tools")).types == ("chat",)


def test_every_frame_and_close_code_is_documented() -> None:
    """docs/protocol.md names every frame type and every close code."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for frame_type in FRAME_TYPES:
        tag = frame_type.model_fields["type"].default
        assert f"`{tag}`" in doc, tag
    for code in CLOSE_TABLE.values():
        assert f"| {int(code.reason)} | `{code.reason.name}` |" in doc, code.reason.name

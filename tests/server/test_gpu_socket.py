"""The /ws/gpu endpoint over a real socket: who gets in, who is refused and with which close code.

The session's rules are unit-tested in tests/protocol; these check that the endpoint enforces them
on the wire: a replayed hello, a key that is not the enrolled one, garbage and a silent peer are each
closed with their own code, and a second connection of the same worker supersedes the first.
Strangers get a small budget: a frame of a few KiB before authentication, and a bounded number of
unauthenticated sockets per address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api_fixtures import TIMEOUT_S, Api, FakeWorker, fleet, running_api
from pendra.protocol import signing
from pendra.protocol.close import CloseReason
from pendra.protocol.frames import (HANDSHAKE_FRAME_BYTES, PROTOCOL_VERSION, Challenge, Hello,
                                    Ping, Pong, dump_frame, parse_frame)
from pendra.server.gpu_socket import MAX_HANDSHAKES_PER_ADDRESS, MESSAGE_TOO_BIG
from pendra.server.store import workers as worker_store
from polling import eventually


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, heartbeat_interval_s=0.2, heartbeat_timeout_s=1.0) as running:
        yield running


async def closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    async with asyncio.timeout(TIMEOUT_S):
        try:
            while True:
                frame = parse_frame(await ws.recv())
                if isinstance(frame, Ping):
                    continue  # stay silent: only the close matters here
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


async def hello_for(ws: ClientConnection, worker: FakeWorker, *, nonce: str | None = None,
                    private_key: str | None = None) -> Hello:
    """Read the challenge and build the hello a worker would send (optionally with another nonce or
    key)."""
    challenge = parse_frame(await ws.recv())
    assert isinstance(challenge, Challenge) and challenge.protocol_version == PROTOCOL_VERSION
    signed = nonce or challenge.nonce
    signature = signing.sign(private_key or worker.private_key,
                             signing.handshake_message(signed, worker.worker_id))
    return Hello(protocol_version=PROTOCOL_VERSION, worker_id=worker.worker_id, name=worker.name,
                 nonce=signed, signature=signature, max_concurrent=1)


async def test_replayed_hello_and_wrong_key_are_refused_on_the_wire(api: Api) -> None:
    """A hello recorded from one connection is refused on the next (4001); so is a hello signed
    with a key that is not the enrolled one; the hub never lists either."""
    worker = FakeWorker("alpha")
    await worker.enrol(api)
    async with connect(api.ws_url) as first:
        recorded = await hello_for(first, worker)
        await first.send(dump_frame(recorded))
        assert parse_frame(await first.recv()).type == "welcome"
    async with connect(api.ws_url) as replay:
        await replay.recv()  # a fresh challenge, ignored by the attacker
        await replay.send(dump_frame(recorded))
        assert await closed_with(replay) == CloseReason.AUTH_FAILED
    async with connect(api.ws_url) as forged:
        other_key, _ = signing.generate_keypair()
        await forged.send(dump_frame(await hello_for(forged, worker, private_key=other_key)))
        assert await closed_with(forged) == CloseReason.AUTH_FAILED
    assert api.app.state.hub.get(worker.worker_id) is None


async def test_garbage_and_silence_are_closed_with_their_codes(api: Api) -> None:
    """Not a frame at all → 4000; an authenticated worker that stops answering pings → 4003 and it
    leaves the hub. (The handshake deadline, 4006, is the session's 10 s: unit-tested there.)"""
    async with connect(api.ws_url) as garbage:
        await garbage.recv()
        await garbage.send("{this is not json")
        assert await closed_with(garbage) == CloseReason.PROTOCOL_ERROR
    worker = FakeWorker("silent")
    await worker.enrol(api)
    async with connect(api.ws_url) as silent:
        await silent.send(dump_frame(await hello_for(silent, worker)))
        assert parse_frame(await silent.recv()).type == "welcome"
        assert api.app.state.hub.get(worker.worker_id) is not None
        assert await closed_with(silent) == CloseReason.HEARTBEAT_TIMEOUT
    await eventually(lambda: api.app.state.hub.get(worker.worker_id) is None)


async def test_a_second_connection_supersedes_the_first(api: Api) -> None:
    """The same worker connecting again replaces its older connection, which is closed with 4004;
    the newer one stays served (it answers pings and keeps its place in the hub)."""
    async with fleet(api, FakeWorker("alpha")) as (worker,):
        hub = api.app.state.hub
        old = hub.get(worker.worker_id)
        async with connect(api.ws_url) as newer:
            await newer.send(dump_frame(await hello_for(newer, worker)))
            assert parse_frame(await newer.recv()).type == "welcome"
            assert worker._ws is not None and worker._reader is not None
            async with asyncio.timeout(TIMEOUT_S):
                await worker._reader  # the fake worker's read loop ends when its socket closes
            assert worker._ws.close_code == CloseReason.SUPERSEDED
            assert hub.get(worker.worker_id) is not old
            async with asyncio.timeout(TIMEOUT_S):
                ping = parse_frame(await newer.recv())
            assert isinstance(ping, Ping)
            await newer.send(dump_frame(Pong(ts=ping.ts)))
            assert hub.get(worker.worker_id) is not None


async def test_a_pinging_worker_is_answered_not_pinged_and_its_last_seen_is_stored(
        api: Api) -> None:
    """A worker that pings every interval gets a pong for each and no ping of the server's own:
    one frame each way per interval. When it leaves, the time it was last heard from reaches the
    store (written in a batch, not by its socket loop)."""
    worker = FakeWorker("beating")
    await worker.enrol(api)
    async with connect(api.ws_url) as ws:
        await ws.send(dump_frame(await hello_for(ws, worker)))
        assert parse_frame(await ws.recv()).type == "welcome"
        received = []
        for i in range(6):  # six heartbeat intervals (0.2 s each)
            await ws.send(dump_frame(Ping(ts=float(i))))
            async with asyncio.timeout(TIMEOUT_S):
                received.append(parse_frame(await ws.recv()))
            await asyncio.sleep(0.2)
        assert [type(f) for f in received] == [Pong] * 6
        with pytest.raises(TimeoutError):  # and nothing else is waiting
            async with asyncio.timeout(0.1):
                await ws.recv()
        heard = api.app.state.hub.get(worker.worker_id).last_seen
    await eventually(lambda: api.app.state.hub.get(worker.worker_id) is None)

    async def stored() -> object:
        async with api.app.state.store.session() as session:
            row = await worker_store.get_worker(session, worker.worker_id)
            return row.last_seen_at if row is not None and row.last_seen_at is not None \
                and row.last_seen_at >= heard else None

    assert await eventually(stored, interval_s=0.05) is not None


async def test_a_stranger_gets_a_small_frame_and_few_sockets(api: Api) -> None:
    """Before authentication a frame over HANDSHAKE_FRAME_BYTES is refused by the socket layer
    (1009) and the socket closed; MAX_HANDSHAKES_PER_ADDRESS unauthenticated sockets from one
    address are all it may hold: one more is denied at the upgrade with 503 and Retry-After. Once
    they close, a real worker connects and, authenticated, may send large frames."""
    async with connect(api.ws_url, max_size=None) as big:
        await big.recv()
        await big.send("x" * (HANDSHAKE_FRAME_BYTES + 1))
        assert await closed_with(big) == MESSAGE_TOO_BIG
    idle = [await connect(api.ws_url) for _ in range(MAX_HANDSHAKES_PER_ADDRESS)]
    try:
        try:
            await connect(api.ws_url)
        except InvalidStatus as exc:
            assert exc.response.status_code == 503
            assert exc.response.headers["Retry-After"]
        else:
            raise AssertionError("one unauthenticated socket too many was accepted")
    finally:
        for ws in idle:
            await ws.close()
    async with fleet(api, FakeWorker("alpha")) as (worker,):
        await worker.send_raw(dump_frame(Pong(ts=0.0))[:-1] + ', "x": "' + "y" * 100_000 + '"}')
        assert worker._reader is not None and worker._ws is not None
        async with asyncio.timeout(TIMEOUT_S):
            await worker._reader
        # Read whole (no 1009) and refused by the parser: an unknown field.
        assert worker._ws.close_code == CloseReason.PROTOCOL_ERROR

"""The worker's side of /ws/gpu over a real socket: frames queued while the writer is busy go out
coalesced (protocol version 3), in order, and the socket has TCP_NODELAY."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from websockets.asyncio.server import ServerConnection, serve

from pendra.config import WorkerSettings
from pendra.protocol import signing
from pendra.protocol.frames import (Chunk, Chunks, End, Frame, Inventory, Ping, Pong,
                                    dump_frame, parse_frame)
from pendra.protocol.session import KeyNeeded, ServerSession
from pendra.worker.connection import Connection, SendQueue
from polling import eventually
from suite_env import WAIT


class Quiet:
    async def on_frame(self, frame: Frame) -> None:
        pass

    async def on_disconnect(self) -> None:
        pass


@pytest.fixture
async def linked() -> AsyncIterator[tuple[Connection, list[Frame]]]:
    """A Connection authenticated to a minimal control plane that records every frame after
    the hello."""
    private_key, public_key = signing.generate_keypair()
    received: list[Frame] = []

    async def control_plane(ws: ServerConnection) -> None:
        session = ServerSession(now=time.monotonic(), heartbeat_interval_s=30,
                                heartbeat_timeout_s=60)
        await ws.send(dump_frame(session.challenge()))
        outputs = session.receive_raw(await ws.recv(), time.monotonic())
        assert isinstance(outputs[0], KeyNeeded)
        for output in session.key_found(public_key, time.monotonic()):
            if isinstance(output, Frame):
                await ws.send(dump_frame(output))
        async for raw in ws:
            received.append(parse_frame(raw))

    async with serve(control_plane, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = WorkerSettings(
            server_ws_url=f"ws://127.0.0.1:{port}", private_key=private_key,
            worker_id="wrk-test", worker_name="alpha", models=None, max_concurrent=3,
            ollama_endpoint="http://127.0.0.1:1", refresh_interval_s=60, ollama_num_ctx_cap=0,
            heartbeat_interval_s=30.0, heartbeat_timeout_s=60.0)
        connection = Connection(settings, Quiet(),
                                lambda: Inventory(backends=[], models=[], max_concurrent=3))
        task = asyncio.create_task(connection.run())
        try:
            await eventually(lambda: any(isinstance(f, Inventory) for f in received),
                             what="the inventory")
            yield connection, received
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_chunks_queued_together_go_out_as_one_frame_in_order(
        linked: tuple[Connection, list[Frame]]) -> None:
    """Five chunks of one request queued back to back arrive as one chunks frame; a chunk of
    another request and the end keep their places after them."""
    connection, received = linked
    received.clear()
    for n in range(5):
        assert await connection.send(Chunk(id="req_a", data={"n": n}))
    assert await connection.send(Chunk(id="req_b", data={"n": 0}))
    assert await connection.send(Chunk(id="req_a", data={"n": 5}))
    assert await connection.send(End(id="req_a"))
    await connection.flush(WAIT)
    await eventually(lambda: len(received) >= 4, what="four frames")
    assert received == [Chunks(id="req_a", data=[{"n": n} for n in range(5)]),
                        Chunk(id="req_b", data={"n": 0}), Chunk(id="req_a", data={"n": 5}),
                        End(id="req_a")]


async def test_a_lone_chunk_is_sent_at_once_and_the_socket_has_no_delay(
        linked: tuple[Connection, list[Frame]]) -> None:
    """A chunk with nothing behind it is written as soon as its sender yields (no waiting for
    company), as a plain chunk frame; the socket to the control plane has TCP_NODELAY."""
    connection, received = linked
    received.clear()
    assert await connection.send(Chunk(id="req_c", data={"n": 0}))
    await eventually(lambda: received == [Chunk(id="req_c", data={"n": 0})], what="the chunk")
    assert connection._ws is not None
    sock = connection._ws.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_send_says_false_when_not_connected() -> None:
    """A frame offered with no connection is refused, not queued for a socket that never comes."""
    settings = WorkerSettings(
        server_ws_url="ws://127.0.0.1:1", private_key="", worker_id="wrk-test",
        worker_name="alpha", models=None, max_concurrent=1, ollama_endpoint="http://127.0.0.1:1",
        refresh_interval_s=60, ollama_num_ctx_cap=0, heartbeat_interval_s=5.0,
        heartbeat_timeout_s=15.0)
    connection = Connection(replace(settings), Quiet(),
                            lambda: Inventory(backends=[], models=[], max_concurrent=1))
    assert not await connection.send(Chunk(id="req_a", data={}))


async def test_a_heartbeat_goes_ahead_of_a_backlog_and_never_waits_for_room() -> None:
    """With the queue full of a busy stream's chunks, a ping is queued at once (no room needed)
    and is the first frame the writer takes; the chunks behind it keep their order."""
    queue = SendQueue(limit=3)
    for n in range(3):
        assert await queue.put(Chunk(id="req_a", data={"n": n}))
    assert await asyncio.wait_for(queue.put(Ping(ts=1.0)), timeout=WAIT)
    first, *rest = await queue.take()
    assert parse_frame(first) == Ping(ts=1.0)
    assert [parse_frame(raw) for raw in rest] == [
        Chunks(id="req_a", data=[{"n": n} for n in range(3)])]
    queue.close()
    assert not await queue.put(Pong(ts=1.0))

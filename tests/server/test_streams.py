"""The hub's bounded queues (server/streams.py), directly: the outbox and a request's frames."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from suite_env import WAIT

from pendra.errors import PendraError
from pendra.protocol.frames import PROTOCOL_VERSION, Chunk, End, Hello, Ping
from pendra.server.hub import Hub, RequestHandle
from pendra.server.streams import FrameStream, Outbox

# Only bounds a broken queue; nothing here waits on the clock.
STEP_S = 2 * WAIT


async def test_outbox_keeps_order_drops_offers_when_full_and_close_releases_put() -> None:
    """In order; ``offer`` drops past the limit; a waiting ``put`` returns False on close."""
    box = Outbox(2)
    assert box.offer("a") and box.offer("b")
    assert not box.offer("c"), "full: a frame not worth waiting for is dropped"
    assert [await box.get(), await box.get()] == ["a", "b"]
    assert box.offer("d") and box.offer("e")
    waiting = asyncio.create_task(box.put(Ping(ts=0.0)))
    await asyncio.sleep(0)
    assert not waiting.done()
    box.close()
    assert await asyncio.wait_for(waiting, STEP_S) is False
    assert not box.offer("f")


async def test_a_failure_comes_after_the_queued_frames_and_wakes_a_waiting_reader() -> None:
    """Frames queued before a failure are read first, then the failure is raised (again on every
    later read); a reader blocked on an empty stream is woken by the failure."""
    stream = FrameStream((End,), limit=4)
    await stream.put(Chunk(id="r", data={"n": 1}))
    stream.fail(PendraError("gone"))
    stream.fail(PendraError("twice"))  # the first failure wins
    assert (await stream.next()) == Chunk(id="r", data={"n": 1})
    for _ in range(2):
        with pytest.raises(PendraError, match="gone"):
            await stream.next()
    idle = FrameStream((End,), limit=4)
    reader = asyncio.create_task(idle.next())
    await asyncio.sleep(0)
    idle.fail(PendraError("dropped"))
    with pytest.raises(PendraError, match="dropped"):
        await asyncio.wait_for(reader, STEP_S)


async def test_a_stream_ends_after_its_terminal_frame() -> None:
    """After the terminal frame nothing more is queued, and reading on stops the iteration."""
    stream = FrameStream((End,), limit=4)
    await stream.put(End(id="r"))
    await stream.put(Chunk(id="r", data={}))
    assert stream.ended
    assert isinstance(await stream.next(), End)
    with pytest.raises(StopAsyncIteration):
        await stream.next()


async def test_open_request_is_synchronous() -> None:
    """``Hub.open_request`` returns the handle itself, which is not awaitable (no trick)."""
    hub = Hub(heartbeat_interval_s=5, heartbeat_timeout_s=15)
    link = hub.attach(Hello(protocol_version=PROTOCOL_VERSION, worker_id="wrk-00000001", name="w",
                     nonce="n", signature="s", max_concurrent=1), "w")
    handle = hub.open_request("wrk-00000001", "chat", "m", {"messages": []})
    assert isinstance(handle, RequestHandle) and not inspect.isawaitable(handle)
    assert hub.get("wrk-00000001").in_flight == 1  # type: ignore[union-attr]
    await handle.aclose()
    assert hub.get("wrk-00000001").in_flight == 0  # type: ignore[union-attr]
    hub.detach(link, "test over")

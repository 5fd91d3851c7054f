"""The hub on its own, driven as the /ws/gpu socket loop drives it (no sockets): who is connected,
the slot accounting of requests, bounded streams, stranded models, waits and shutdown.

``open_request`` is called without ``await``: the handle is usable at once.
"""

from __future__ import annotations

import asyncio

import pytest

from hub_fakes import EMBED, attach, chunk, drain, end, hello, inventory, model, new_hub
from pendra.errors import InvalidRequest, NoCapacity
from pendra.protocol.close import CloseReason
from pendra.protocol.frames import (Cancel, Chunk, End, Error, Install, OpDone, Ping, Progress,
                                    Request)
from pendra.server.hub import WorkerGone
from polling import eventually
from suite_env import WAIT

BODY = {"messages": [{"role": "user", "content": "hi"}]}


# --- presence ------------------------------------------------------------------------------------------


async def test_attach_registers_the_worker_under_its_enrolled_name() -> None:
    """A worker is present from attach on, under the enrolled name (not its hello's), with what
    its inventory serves; ``models`` merges the fleet; every change bumps ``version``."""
    hub = new_hub()
    before = hub.version
    attach(hub, "wrk-a", model("m:latest"), model("e:latest", EMBED))
    attach(hub, "wrk-b", model("m:latest"))
    assert hub.version > before
    view = hub.get("wrk-a")
    assert view is not None and view.name == "wrk-a" and view.max_concurrent == 1
    assert [w.id for w in hub.connected()] == ["wrk-a", "wrk-b"]
    assert sorted(w.id for w in hub.serving("m:latest")) == ["wrk-a", "wrk-b"]
    assert [w.id for w in hub.serving("e:latest")] == ["wrk-a"]
    assert hub.serving("nothing") == [] and hub.get("wrk-zzz") is None
    info, workers = hub.models()["m:latest"]
    assert info.id == "m:latest" and len(workers) == 2


async def test_a_second_connection_supersedes_the_first() -> None:
    """The same id connecting again drops the old link at once (its requests end WorkerGone) and
    asks its socket to close with SUPERSEDED; the new link is the one served."""
    hub = new_hub()
    old = attach(hub, "wrk-a", model("m:latest"))
    handle = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    new = attach(hub, "wrk-a", model("m:latest"))
    assert old.closed and not new.closed
    assert (await old.close_requested()).reason is CloseReason.SUPERSEDED
    with pytest.raises(WorkerGone, match="replaced by a newer connection"):
        await anext(handle)
    assert [w.id for w in hub.connected()] == ["wrk-a"] and hub.get("wrk-a") is new.view
    assert new.view.in_flight == 0
    old_detached = hub.version
    hub.detach(old, "socket closed")  # the old socket loop finishing later changes nothing
    assert hub.get("wrk-a") is new.view and hub.version == old_detached and old.finished.is_set()


async def test_detach_fails_open_requests_after_the_frames_already_received() -> None:
    """A worker leaving ends each open request with WorkerGone — after what it had sent — and
    leaves the hub; detaching twice is harmless."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"))
    handle = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    await link.deliver(Chunk(id=handle.id, data={"n": 1}))
    hub.detach(link, "heartbeat timeout")
    hub.detach(link, "again")
    assert isinstance(await anext(handle), Chunk)
    with pytest.raises(WorkerGone, match="heartbeat timeout"):
        await anext(handle)
    assert hub.connected() == [] and link.finished.is_set()
    with pytest.raises(WorkerGone, match="not connected"):
        hub.open_request("wrk-a", "chat", "m:latest", BODY)


# --- requests and their slots --------------------------------------------------------------------------


async def test_open_request_queues_the_frame_and_takes_a_slot() -> None:
    """The request frame is queued for the socket at once, and a slot is taken; with none left
    the next open is NoCapacity and queues nothing."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"), max_concurrent=2)
    first = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    second = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    assert hub.get("wrk-a").in_flight == 2 and hub.get("wrk-a").free == 0
    with pytest.raises(NoCapacity, match="no free slot"):
        hub.open_request("wrk-a", "chat", "m:latest", BODY)
    sent = await drain(link)
    assert [(f.id, f.kind, f.model, f.body) for f in sent if isinstance(f, Request)] == [
        (first.id, "chat", "m:latest", BODY), (second.id, "chat", "m:latest", BODY)]
    assert first.worker is link.view


async def test_the_slot_is_released_exactly_once_when_the_worker_ends_the_request() -> None:
    """End (or Error) releases the slot; closing the handle afterwards releases nothing more
    and sends no cancel."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"), max_concurrent=2)
    done = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    failed = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    await drain(link)
    await link.deliver(Chunk(id=done.id, data={"n": 1}))
    await link.deliver(End(id=done.id))
    await link.deliver(Error(id=failed.id, status=500, message="boom"))
    assert hub.get("wrk-a").in_flight == 0
    assert [type(f) async for f in done] == [Chunk, End]
    assert [type(f) async for f in failed] == [Error]
    await done.aclose()
    await done.aclose()
    await failed.aclose()
    assert hub.get("wrk-a").in_flight == 0
    assert await drain(link) == []
    await link.deliver(Chunk(id=done.id, data={"late": True}))  # for a closed request: dropped


async def test_closing_an_open_handle_cancels_it_on_the_worker_and_releases_once() -> None:
    """``aclose`` before the end sends one Cancel and releases the slot; a second close, and the
    worker's late End, change nothing. ``async with`` closes too."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"), max_concurrent=2)
    other = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    async with hub.open_request("wrk-a", "chat", "m:latest", BODY) as handle:
        assert hub.get("wrk-a").in_flight == 2
    await handle.aclose()
    await link.deliver(End(id=handle.id))
    assert hub.get("wrk-a").in_flight == 1
    sent = await drain(link)
    assert [f.id for f in sent if isinstance(f, Cancel)] == [handle.id]
    await other.aclose()
    assert hub.get("wrk-a").in_flight == 0


async def test_a_body_that_cannot_be_encoded_takes_no_slot() -> None:
    """Text that is not valid Unicode fails that one request with InvalidRequest before a slot is
    taken, and nothing reaches the socket."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"))
    with pytest.raises(InvalidRequest, match="not valid Unicode"):
        hub.open_request("wrk-a", "chat", "m:latest", {"messages": [{"content": "\ud800"}]})
    assert hub.get("wrk-a").in_flight == 0 and await drain(link) == []


async def test_a_worker_not_reading_its_socket_gets_no_more_requests() -> None:
    """Once its outbox is full, liveness frames are dropped rather than queued and open_request
    says NoCapacity without taking a slot."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"))
    offered = 0
    while link.offer(Ping(ts=0.0)):
        offered += 1
        assert offered < 100_000, "the outbox is not bounded"
    with pytest.raises(NoCapacity, match="not reading its connection"):
        hub.open_request("wrk-a", "chat", "m:latest", BODY)
    assert hub.get("wrk-a").in_flight == 0


# --- bounded streams -----------------------------------------------------------------------------------


async def test_a_full_stream_makes_the_read_loop_wait_for_its_consumer() -> None:
    """Back-pressure: past the stream's bound, ``deliver`` waits until the consumer reads."""
    hub = new_hub(heartbeat_timeout_s=20 * WAIT)
    link = attach(hub, "wrk-a", model("m:latest"))
    handle = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    delivered = 0

    async def feed() -> None:
        nonlocal delivered
        while True:
            await link.deliver(Chunk(id=handle.id, data={"n": delivered}))
            delivered += 1

    feeder = asyncio.create_task(feed())
    try:
        # Putting into a stream with room never yields, so the feeder runs until the stream is
        # full, then blocks: the first count we see is the bound.
        await eventually(lambda: delivered > 0)
        bound = delivered
        assert bound < 10_000
        await anext(handle)
        await eventually(lambda: delivered == bound + 1)
        assert hub.get("wrk-a").in_flight == 1  # waiting is not failing
    finally:
        feeder.cancel()
        await asyncio.wait([feeder])
    await handle.aclose()


async def test_a_stalled_consumer_loses_its_stream_after_the_stall_bound() -> None:
    """A consumer that stops reading does not hold the worker's read loop past ``stall_s``: its
    request is cancelled on the worker, its slot freed, and it reads what was queued, then
    WorkerGone."""
    hub = new_hub(heartbeat_timeout_s=0.2)  # stall_s = 0.1
    link = attach(hub, "wrk-a", model("m:latest"))
    handle = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    await drain(link)
    delivered = 0
    async with asyncio.timeout(10 * WAIT):
        while hub.get("wrk-a").in_flight:
            await link.deliver(Chunk(id=handle.id, data={"n": delivered}))
            delivered += 1
    assert [f for f in await drain(link) if isinstance(f, Cancel)] == [Cancel(id=handle.id)]
    received = 0
    with pytest.raises(WorkerGone, match="fell behind"):
        async for frame in handle:
            assert isinstance(frame, Chunk)
            received += 1
    assert received == delivered - 1  # all but the frame that found no room
    assert not link.closed  # the worker itself stays connected


# --- inventory and waits -------------------------------------------------------------------------------


async def test_models_of_a_backend_that_stopped_answering_are_stranded_until_it_returns() -> None:
    """An inventory whose backend is unverified drops its models from ``serving`` but keeps them
    in ``stranded`` (model → backend kind) until that backend is verified again."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"), model("e:latest", EMBED))
    link.inventory(inventory(verified=False))
    view = hub.get("wrk-a")
    assert hub.serving("m:latest") == [] and view.stranded == {"m:latest": "ollama",
                                                               "e:latest": "ollama"}
    link.inventory(inventory(verified=False))  # still down: still stranded
    assert set(view.stranded) == {"m:latest", "e:latest"}
    link.inventory(inventory(model("m:latest"), verified=True))
    assert view.stranded == {} and [w.id for w in hub.serving("m:latest")] == ["wrk-a"]
    link.inventory(inventory(model("m:latest"), max_concurrent=4))
    assert view.max_concurrent == 4


async def test_wait_changed_wakes_on_fleet_changes_and_times_out_quietly() -> None:
    """``wait_changed`` returns the new version after a connect or inventory change, and the
    unchanged one when its timeout passes first."""
    hub = new_hub()
    since = hub.version
    assert await hub.wait_changed(since, 0.01) == since
    waiter = asyncio.create_task(hub.wait_changed(since, 10 * WAIT))
    await asyncio.sleep(0)
    link = attach(hub, "wrk-a", model("m:latest"))
    assert await waiter > since
    since = hub.version
    waiter = asyncio.create_task(hub.wait_changed(since, 10 * WAIT))
    await asyncio.sleep(0)
    link.inventory(inventory())
    assert await waiter > since


async def test_wait_for_capacity_wakes_when_a_slot_frees() -> None:
    """A freed slot wakes ``wait_for_capacity`` (True) without bumping the version; with nothing
    happening it returns False after its timeout."""
    hub = new_hub()
    attach(hub, "wrk-a", model("m:latest"))
    handle = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    assert await hub.wait_for_capacity(0.01) is False
    version = hub.version
    waiter = asyncio.create_task(hub.wait_for_capacity(10 * WAIT))
    await asyncio.sleep(0)
    await handle.aclose()
    assert await waiter is True and hub.version == version


# --- operations and shutdown ---------------------------------------------------------------------------


async def test_an_operation_streams_its_progress_until_done() -> None:
    """``start_op`` sends the install; the worker's Progress… and OpDone reach the handle, and
    frames for an operation nobody listens to are dropped."""
    hub = new_hub()
    link = attach(hub, "wrk-a")
    op = await hub.start_op("wrk-a", Install(op_id="op1", model="m:latest"))
    assert [f for f in await drain(link) if isinstance(f, Install)] == [
        Install(op_id="op1", model="m:latest")]
    await link.deliver(Progress(op_id="op1", status="pulling", completed=1, total=2))
    await link.deliver(OpDone(op_id="op1"))
    await link.deliver(OpDone(op_id="op-unknown"))
    assert [type(f) async for f in op] == [Progress, OpDone]
    with pytest.raises(WorkerGone, match="not connected"):
        await hub.start_op("wrk-zzz", Install(op_id="op2", model="m:latest"))


async def test_close_fails_everything_and_refuses_new_workers() -> None:
    """Shutdown ends open requests and operations with WorkerGone, asks every socket to close with
    GOING_AWAY, waits for the socket loops to finish, and refuses a worker attaching after."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"))
    handle = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    op = await hub.start_op("wrk-a", Install(op_id="op1", model="m:latest"))
    closing = asyncio.create_task(hub.close())
    assert (await link.close_requested()).reason is CloseReason.GOING_AWAY
    assert not closing.done()  # waiting for the socket loop
    hub.detach(link, "closed by the control plane")
    await closing
    with pytest.raises(WorkerGone, match="shutting down"):
        await anext(handle)
    with pytest.raises(WorkerGone, match="shutting down"):
        await anext(op)
    late = hub.attach(hello("wrk-b"), "wrk-b")
    assert late.closed and (await late.close_requested()).reason is CloseReason.GOING_AWAY
    assert hub.connected() == []


async def test_end_with_usage_is_relayed_as_sent() -> None:
    """The End frame reaches the consumer unchanged (usage and finish reason)."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"))
    handle = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    request = next(f for f in await drain(link) if isinstance(f, Request))
    await link.deliver(chunk(request))
    await link.deliver(end(request))
    frames = [f async for f in handle]
    assert frames == [chunk(request), end(request)]

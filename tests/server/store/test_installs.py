"""Install rows: their states, progress and the clean-ups when their runner is gone."""

from __future__ import annotations

import re

import pytest

from pendra.errors import InvalidRequest, NotFound
from pendra.server.store import installs
from pendra.server.store.db import Store
from pendra.server.store.tables import Install


async def _make(store: Store, worker_id: str, model_tag: str, op_id: str | None = None) -> Install:
    async with store.session() as session:
        row = await installs.create_install(
            session, catalogue_id="llama", variant="8b", model_tag=model_tag, backend="ollama",
            worker_id=worker_id, requested_by="admin", op_id=op_id)
        await session.commit()
    return row


async def test_install_runs_to_success(store: Store) -> None:
    """queued → running with progress → succeeded; ``finished_at`` is set at the end only, and the
    install is active (found by ``find_active``) only while it has not ended."""
    row = await _make(store, "wrk-1", "llama3:8b")
    assert re.fullmatch(r"op_[0-9a-f]{16}", row.id)
    assert (row.state, row.status_text, row.completed, row.total) == ("queued", "queued", 0, 0)
    assert row.finished_at is None and row.updated_at == row.created_at
    async with store.session() as session:
        running = await installs.update_install(session, row.id, state="running",
                                                status_text="pulling", completed=5 * 2**30,
                                                total=8 * 2**30)
        await session.commit()
        assert running.finished_at is None and running.updated_at > row.updated_at
        active = await installs.find_active(session, "wrk-1", "llama3:8b")
        assert active is not None and active.id == row.id
        assert await installs.find_active(session, "wrk-2", "llama3:8b") is None
        await installs.update_install(session, row.id, state="succeeded", status_text="success",
                                      completed=8 * 2**30)
        await session.commit()
    async with store.session() as session:
        done = await installs.get_install(session, row.id)
        assert done is not None
        assert (done.state, done.completed, done.total) == ("succeeded", 8 * 2**30, 8 * 2**30)
        assert done.finished_at is not None and done.error is None
        assert await installs.find_active(session, "wrk-1", "llama3:8b") is None


async def test_update_is_checked(store: Store) -> None:
    """Unknown installs are NotFound, unknown states InvalidRequest, fixed fields a TypeError."""
    row = await _make(store, "wrk-1", "m")
    async with store.session() as session:
        with pytest.raises(NotFound):
            await installs.update_install(session, "op_missing", state="running")
        with pytest.raises(InvalidRequest, match="state"):
            await installs.update_install(session, row.id, state="exploded")
        with pytest.raises(TypeError, match="worker_id"):
            await installs.update_install(session, row.id, worker_id="wrk-2")
        assert await installs.get_install(session, "op_missing") is None


async def test_list_filters_and_order(store: Store) -> None:
    """``list_installs`` is newest first and filters by worker and by still-active."""
    a = await _make(store, "wrk-1", "a", op_id="op_a")
    b = await _make(store, "wrk-2", "b", op_id="op_b")
    c = await _make(store, "wrk-1", "c", op_id="op_c")
    async with store.session() as session:
        await installs.update_install(session, a.id, state="failed", error="disk full")
        await session.commit()
        assert [r.id for r in await installs.list_installs(session)] == [c.id, b.id, a.id]
        assert [r.id for r in await installs.list_installs(session, worker_id="wrk-1")] == \
            [c.id, a.id]
        assert [r.id for r in await installs.list_installs(session, worker_id="wrk-1",
                                                            active_only=True)] == [c.id]


async def test_fail_running_for_worker_touches_only_that_workers_active_installs(
        store: Store) -> None:
    """When a worker goes away, its queued and running installs fail with the reason; finished
    installs and other workers' installs are left alone."""
    queued = await _make(store, "wrk-1", "a")
    running = await _make(store, "wrk-1", "b")
    finished = await _make(store, "wrk-1", "c")
    other = await _make(store, "wrk-2", "a")
    async with store.session() as session:
        await installs.update_install(session, running.id, state="running")
        await installs.update_install(session, finished.id, state="succeeded")
        await session.commit()
        assert await installs.fail_running_for_worker(session, "wrk-1", "worker disconnected") == 2
        await session.commit()
    async with store.session() as session:
        rows = {r.id: r for r in await installs.list_installs(session)}
    for op_id in (queued.id, running.id):
        assert (rows[op_id].state, rows[op_id].error) == ("failed", "worker disconnected")
        assert rows[op_id].finished_at is not None
    assert rows[finished.id].state == "succeeded" and rows[finished.id].error is None
    assert rows[other.id].state == "queued" and rows[other.id].finished_at is None


async def test_fail_interrupted_fails_every_active_install(store: Store) -> None:
    """At start-up, installs a previous process left queued or running all become failed."""
    await _make(store, "wrk-1", "a")
    b = await _make(store, "wrk-2", "b")
    async with store.session() as session:
        await installs.update_install(session, b.id, state="running")
        await session.commit()
        assert await installs.fail_interrupted(session, "control plane restarted") == 2
        await session.commit()
        assert await installs.fail_interrupted(session, "again") == 0
    async with store.session() as session:
        assert await installs.list_installs(session, active_only=True) == []
        assert {r.error for r in await installs.list_installs(session)} == \
            {"control plane restarted"}

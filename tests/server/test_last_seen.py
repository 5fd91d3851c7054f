"""Workers' last-seen time: taken from the hub's views in batches by one writer task, flushed on
exit, and kept through a store error until it can be written."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from store_targets import pg_schema, store, target  # noqa: F401  (fixtures)

from hub_fakes import attach, model, new_hub
from pendra.protocol import signing
from pendra.server.last_seen import LastSeen
from pendra.server.store import workers as worker_store
from pendra.server.store.db import Store
from polling import eventually

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def enrol(store: Store, *names: str) -> list[str]:
    ids = []
    async with store.session() as session:
        for name in names:
            row = await worker_store.enrol_worker(session, name, signing.generate_keypair()[1])
            ids.append(row.id)
        await session.commit()
    return ids


async def stamps(store: Store, *ids: str) -> list[datetime | None]:
    async with store.session() as session:
        return [(await worker_store.get_worker(session, i)).last_seen_at  # type: ignore[union-attr]
                for i in ids]


async def test_connected_workers_are_stamped_in_batches_from_the_hub(store: Store) -> None:
    """Every connected worker's ``last_seen`` reaches the store in one write per interval, however
    many frames moved it in between; a worker that did not move is not written again."""
    a, b = await enrol(store, "a", "b")
    hub = new_hub()
    views = [attach(hub, i, model("m:latest")).view for i in (a, b)]
    for view in views:
        view.last_seen = T0
    async with LastSeen(store, hub, interval_s=0.05) as last_seen:
        await eventually(lambda: last_seen.writes >= 1)
        assert await stamps(store, a, b) == [T0, T0]
        for second in range(100):  # a hundred frames from a, between two writes
            views[0].last_seen = T0 + timedelta(seconds=second)
        writes = last_seen.writes
        await eventually(lambda: last_seen.writes > writes)
        assert await stamps(store, a, b) == [T0 + timedelta(seconds=99), T0]
        assert last_seen._pending == {}  # b did not move: nothing left to write for it


async def test_pending_stamps_are_flushed_on_exit(store: Store) -> None:
    """A worker's last stamp is written as the writer exits, even with its next round minutes
    away: both a connected worker's and the final one noted for a worker that left."""
    here, gone = await enrol(store, "here", "gone")
    hub = new_hub()
    attach(hub, here, model("m:latest")).view.last_seen = T0
    async with LastSeen(store, hub, interval_s=600) as last_seen:
        last_seen.note(gone, T0 + timedelta(seconds=5))
        last_seen.note(gone, T0)  # an older stamp never replaces a newer one
    assert await stamps(store, here, gone) == [T0, T0 + timedelta(seconds=5)]


async def test_a_store_error_keeps_the_stamps_until_they_can_be_written(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """With the workers table gone (a real store error), the writer logs once, keeps its stamps
    and keeps going; once the table is back, the newest stamps are written."""
    (worker,) = await enrol(store, "w")
    hub = new_hub()
    view = attach(hub, worker, model("m:latest")).view
    view.last_seen = T0
    caplog.set_level(logging.WARNING, logger="pendra.server.last_seen")
    async with store.session() as session:
        await session.execute(text("ALTER TABLE workers RENAME TO workers_away"))
        await session.commit()
    async with LastSeen(store, hub, interval_s=0.02, retry_first_s=0.01,
                        retry_max_s=0.02) as last_seen:
        await eventually(lambda: "could not record when 1 worker(s) were last seen" in caplog.text)
        view.last_seen = T0 + timedelta(seconds=1)
        async with store.session() as session:
            await session.execute(text("ALTER TABLE workers_away RENAME TO workers"))
            await session.commit()
        await eventually(lambda: last_seen.writes >= 1)
    assert caplog.text.count("could not record when 1 worker(s) were last seen") == 1
    assert await stamps(store, worker) == [T0 + timedelta(seconds=1)]

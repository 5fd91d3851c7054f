"""Keys' last-used time: noted without I/O, coalesced, written by the writer task, flushed on exit."""

from __future__ import annotations

from sqlalchemy import select
from store_targets import pg_schema, store, target  # noqa: F401  (fixtures)

from pendra.server.last_used import LastUsed
from pendra.server.store import keys
from pendra.server.store.db import Store
from pendra.server.store.tables import ApiKey


async def make_key(store: Store, name: str) -> ApiKey:
    async with store.session() as session:
        row, _ = await keys.create_key(session, name)
        await session.commit()
    return row


async def stamp_of(store: Store, key_id: str) -> object:
    async with store.session() as session:
        return await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))


async def test_uses_coalesce_into_one_stamp_written_by_the_task(store: Store) -> None:
    """Many uses of a key between writes become one stamp (the latest); ``flush`` waits for it."""
    row = await make_key(store, "busy")
    async with LastUsed(store, interval_s=60) as last_used:
        for _ in range(100):
            last_used.note(row.id)
        assert len(last_used._pending) == 1
        latest = last_used._pending[row.id]
        await last_used.flush()
        assert await stamp_of(store, row.id) == latest


async def test_pending_stamps_are_written_on_exit(store: Store) -> None:
    """A stamp noted just before shutdown is still written: exiting flushes what is pending."""
    first, second = await make_key(store, "a"), await make_key(store, "b")
    async with LastUsed(store, interval_s=60) as last_used:
        last_used.note(first.id)
        await last_used.flush()
        last_used.note(second.id)  # the task now waits out its 60 s pause
    assert await stamp_of(store, first.id) is not None
    assert await stamp_of(store, second.id) is not None


async def test_a_key_is_noted_at_most_once_a_minute(store: Store) -> None:
    """Once a key's use is written, more uses within the minute note nothing (no write, no read:
    the time it was noted is kept in memory); another key is noted as usual."""
    first, second = await make_key(store, "a"), await make_key(store, "b")
    async with LastUsed(store, interval_s=60) as last_used:
        last_used.note(first.id)
        await last_used.flush()
        last_used.note(first.id)
        assert last_used._pending == {}
        last_used.note(second.id)
        assert list(last_used._pending) == [second.id]

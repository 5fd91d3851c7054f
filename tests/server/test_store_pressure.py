"""The store under pressure loses nothing: bookkeeping writes (usage rows, keys' last-used time)
never fail a request and are retried until stored, also across a shutdown.

The pressure is real: another connection holds SQLite's write lock (``BEGIN EXCLUSIVE``) or a
PostgreSQL table lock (``LOCK TABLE … IN EXCLUSIVE MODE``: reads go on, writes wait) while
requests flow through a real server to a fake worker on a real WebSocket.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from api_fixtures import TIMEOUT_S, Api, FakeWorker, fleet, running_api
from pendra.server.store.db import Store
from pendra.server.store.keys import hash_key
from pendra.server.store.tables import ApiKey, Usage
from suite_env import POSTGRES_URL, WAIT

# The fault the issue names: a database write-locked for 10 s. Past SQLite's 5 s busy timeout, so
# writes really fail ("database is locked") and must be retried.
SQLITE_LOCK_S = 10.0
# Requests keep flowing for this long while the lock is held; then the server shuts down, still
# locked, and its shutdown must flush what is queued once the lock goes.
FLOW_S = 7.0
HELLO = [{"role": "user", "content": "hi"}]


def chat(model: str = "llama3.2") -> dict[str, object]:
    return {"model": model, "messages": HELLO}


async def hold_sqlite_write_lock(path: Path, hold_s: float) -> asyncio.Task[None]:
    """Another connection takes the database's write lock now and releases it ``hold_s`` seconds
    later, in the task returned."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=TIMEOUT_S)
    await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")

    async def release() -> None:
        try:
            await asyncio.sleep(hold_s)
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    return asyncio.create_task(release(), name="sqlite-write-lock")


async def count_rows(store: Store, key_id: str) -> tuple[int, object]:
    async with store.session() as session:
        rows = await session.scalar(select(func.count()).select_from(Usage))
        last_used = await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
    return int(rows or 0), last_used


async def key_id_of(api: Api, raw: str) -> str:
    async with api.app.state.store.session() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.hash == hash_key(raw)))
    assert row is not None
    return row.id


async def chat_for(api: Api, key: str, seconds: float) -> int:
    """Chat requests, three at a time, for ``seconds``; each must succeed. How many were sent."""
    sent = 0
    async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            replies = await asyncio.gather(*(
                http.post("/api/v1/chat/completions", json=chat()) for _ in range(3)))
            for reply in replies:
                assert reply.status_code == 200, reply.text
            sent += len(replies)
            await asyncio.sleep(0.5)
    return sent


async def test_a_write_locked_sqlite_store_fails_no_request_and_loses_no_usage(
        tmp_path: Path) -> None:
    """With SQLite write-locked for 10 s, every request with a never-used key still succeeds (the
    last-used stamp is written later), and every usage row is in the store afterwards, although
    the server shut down while the database was still locked."""
    sent = 0
    released: asyncio.Task[None] | None = None
    try:
        async with running_api(tmp_path) as api:
            db_path = Path(make_url(api.settings.database_url).database or "")
            async with fleet(api, FakeWorker("alpha")):
                key = await api.new_key("fresh")
                key_id = await key_id_of(api, key)
                released = await hold_sqlite_write_lock(db_path, SQLITE_LOCK_S)
                sent = await chat_for(api, key, FLOW_S)
                assert not released.done(), "the requests ran while the database was locked"
                assert api.app.state.usage.retries > 0, "writes really failed and were retried"
            # Leaving running_api shuts the server down while the lock is still held: shutdown
            # keeps retrying the queued rows (and last-used stamps) until the lock goes.
            assert not released.done()
    finally:
        if released is not None:
            await released
    store = await Store.open(api.settings.database_url)
    try:
        rows, last_used = await count_rows(store, key_id)
    finally:
        await store.close()
    assert rows == sent and sent > 0
    assert last_used is not None


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (URL), dropped after the test."""
    name = "pendra_test_" + secrets.token_hex(6)
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with asyncio.timeout(TIMEOUT_S), admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        async with asyncio.timeout(TIMEOUT_S), admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.mark.postgres
async def test_a_locked_postgres_table_fails_no_request_and_loses_no_usage(
        tmp_path: Path, pg_database: str) -> None:
    """With ``usage`` and ``api_keys`` locked against writes on PostgreSQL, requests with a
    never-used key all answer while the lock is still held; once it goes, every usage row and the
    key's last-used time are stored."""
    async with running_api(tmp_path, database_url=pg_database) as api:
        async with fleet(api, FakeWorker("alpha")):
            key = await api.new_key("fresh")
            key_id = await key_id_of(api, key)
            locker = create_async_engine(pg_database)
            try:
                async with locker.connect() as conn:
                    await conn.execute(text("BEGIN"))
                    await conn.execute(text("LOCK TABLE usage, api_keys IN EXCLUSIVE MODE"))
                    async with httpx.AsyncClient(
                            base_url=api.base_url, timeout=TIMEOUT_S,
                            headers={"Authorization": f"Bearer {key}"}) as http:
                        replies = await asyncio.gather(*(
                            http.post("/api/v1/chat/completions", json=chat())
                            for _ in range(10)))
                    assert [r.status_code for r in replies] == [200] * 10
                    await asyncio.sleep(1.0 * WAIT)  # the writers wait on the lock meanwhile
                    await conn.execute(text("ROLLBACK"))
            finally:
                await locker.dispose()
            async with asyncio.timeout(TIMEOUT_S):
                await api.app.state.usage.flush()
                await api.app.state.last_used.flush()
            rows, last_used = await count_rows(api.app.state.store, key_id)
    assert rows == 10 and last_used is not None

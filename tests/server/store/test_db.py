"""Opening the store: migrations, backends, persistence, and the engine's edges."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import StatementError

from pendra.errors import ConfigError
from pendra.server.store import admin, installs, keys, usage, users, workers
from pendra.server.store.db import (MIGRATIONS_DIR, Store, current_revision, downgrade, upgrade)
from pendra.server.store.tables import Base

from .conftest import POSTGRES_URL, Target

TABLES = {"api_keys", "workers", "usage", "users", "audit", "installs", "revoked_sessions",
          "stored_responses"}
HEAD = "0005"
PUBLIC_KEY = "A" * 43 + "="  # base64 of 32 zero bytes


def _head() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


async def _tables(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_open_migrates_empty_database_to_head(store: Store, target: Target) -> None:
    """Opening an empty database creates every table and records the head revision."""
    assert _head() == HEAD
    assert await current_revision(store.engine) == HEAD
    assert TABLES | {"alembic_version"} <= await _tables(store)
    if target.schema is not None:
        async with store.engine.connect() as connection:
            found = set((await connection.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": target.schema})).scalars())
        assert found == TABLES | {"alembic_version"}


async def test_reopen_is_idempotent(store: Store, target: Target) -> None:
    """Opening an already migrated database again changes nothing and keeps the revision."""
    for _ in range(2):
        again = await target.open()
        try:
            assert await current_revision(again.engine) == HEAD
            assert TABLES <= await _tables(again)
        finally:
            await again.close()
    await upgrade(store.engine)  # an explicit upgrade at head is a no-op too
    assert await current_revision(store.engine) == HEAD


async def test_downgrade_to_base_then_upgrade_to_head(store: Store) -> None:
    """``downgrade base`` drops every table; ``upgrade head`` brings them back, on both backends."""
    await downgrade(store.engine, "base")
    assert await current_revision(store.engine) is None
    assert not TABLES & await _tables(store)
    await upgrade(store.engine, "head")
    assert await current_revision(store.engine) == HEAD
    assert TABLES <= await _tables(store)
    async with store.session() as session:
        await keys.create_key(session, "after the round trip")
        await session.commit()


async def test_models_match_migrations(store: Store) -> None:
    """The migrated schema is exactly what ``tables.py`` declares: autogenerate finds nothing."""
    def compare(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with store.engine.connect() as connection:
        assert await connection.run_sync(compare) == []


async def test_data_survives_close_and_reopen(store: Store, target: Target) -> None:
    """Every table's rows are still there after closing the Store and opening another on it."""
    async with store.session() as session:
        key, raw = await keys.create_key(session, "ci")
        await workers.enrol_worker(session, "gpu-1", PUBLIC_KEY, worker_id="wrk-0000abcd")
        await usage.record_usage(session, usage.UsageRecord(
            request_id="req-1", kind="chat", model_requested="m", model_served="m",
            key_id=key.id, worker_id="wrk-0000abcd", worker_name="gpu-1", status=200,
            latency_ms=12, prompt_tokens=3, completion_tokens=4))
        password = await admin.ensure_admin(session)
        await installs.create_install(session, op_id="op_1", catalogue_id="c", variant="v",
                                      model_tag="m:1b", backend="ollama", worker_id="wrk-0000abcd")
        await session.commit()
    await store.close()

    reopened = await target.open()
    try:
        async with reopened.session() as session:
            found = await keys.authenticate(session, raw)
            assert found is not None and found.id == key.id
            worker = await workers.get_worker(session, "wrk-0000abcd")
            assert worker is not None and worker.name == "gpu-1"
            assert [u.request_id for u in await usage.recent_usage(session)] == ["req-1"]
            assert password is not None
            assert await admin.verify_admin_password(session, password)
            assert await admin.ensure_admin(session) is None
            install = await installs.get_install(session, "op_1")
            assert install is not None and install.state == "queued"
    finally:
        await reopened.close()


async def test_datetimes_come_back_aware_utc(store: Store) -> None:
    """Timestamps come back aware and in UTC; other offsets are converted, naive ones refused."""
    async with store.session() as session:
        await workers.enrol_worker(session, "w", PUBLIC_KEY, worker_id="wrk-1")
        plus_two = datetime(2030, 1, 2, 5, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
        await workers.touch_worker(session, "wrk-1", plus_two)
        await session.commit()
    async with store.session() as session:
        row = await workers.get_worker(session, "wrk-1")
        assert row is not None
        assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timedelta(0)
        assert row.last_seen_at == datetime(2030, 1, 2, 3, 0, 0, 123456, tzinfo=UTC)
        assert row.last_seen_at.tzinfo == UTC
        with pytest.raises(StatementError, match="naive datetime"):
            await workers.touch_worker(session, "wrk-1", datetime(2030, 1, 1))


async def test_sqlite_foreign_keys_and_wal_are_on(tmp_path: Path) -> None:
    """SQLite: missing parent directories are made, foreign keys enforced, the journal is WAL."""
    path = tmp_path / "a" / "b" / "pendra.db"
    store = await Store.open(f"sqlite:///{path}")  # the plain driver name is upgraded to aiosqlite
    try:
        assert path.exists()
        assert store.url == f"sqlite+aiosqlite:///{path}"
        async with store.engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
    finally:
        await store.close()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_sqlite_files_are_private(tmp_path: Path) -> None:
    """A new SQLite database and its -wal/-shm side files are 0600 (its new folder 0700), and a
    database an earlier version left 0644 is made 0600 when opened."""
    path = tmp_path / "home" / "pendra.db"
    store = await Store.open(f"sqlite:///{path}")
    try:
        async with store.session() as session:
            await keys.create_key(session, "k")
            await session.commit()
        side_files = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
        assert all(p.exists() for p in side_files)  # WAL files live while the store is open
        assert [_mode(p) for p in (path, *side_files)] == [0o600] * 3
        assert _mode(path.parent) == 0o700
    finally:
        await store.close()

    path.chmod(0o644)
    store = await Store.open(f"sqlite:///{path}")
    try:
        assert _mode(path) == 0o600
    finally:
        await store.close()


async def test_several_stores_open_at_once(tmp_path: Path) -> None:
    """Stores opened concurrently in one loop each migrate and keep their own database."""
    paths = [tmp_path / f"db{i}.sqlite" for i in range(3)]
    stores = await asyncio.gather(*(Store.open(f"sqlite+aiosqlite:///{p}") for p in paths))
    try:
        for i, store in enumerate(stores):
            async with store.session() as session:
                await keys.create_key(session, f"key-{i}")
                await session.commit()
        for i, store in enumerate(stores):
            async with store.session() as session:
                assert [k.name for k in await keys.list_keys(session)] == [f"key-{i}"]
    finally:
        for store in stores:
            await store.close()


@pytest.mark.postgres
async def test_url_hides_the_password(pg_schema: str) -> None:
    """``Store.url`` never shows the database password."""
    url = POSTGRES_URL.replace("postgres@", "postgres:hunter2@")
    assert "hunter2" in url
    store = await Store.open(url, schema=pg_schema)
    try:
        assert "hunter2" not in store.url
        assert store.url.startswith("postgresql+asyncpg://postgres:***@")
        assert "hunter2" not in repr(store)
    finally:
        await store.close()


async def test_unreachable_or_invalid_databases_are_config_errors(tmp_path: Path) -> None:
    """A URL that cannot be parsed or reached, or a schema on SQLite, is a ConfigError."""
    with pytest.raises(ConfigError, match="not a database URL"):
        await Store.open("not a url")
    with pytest.raises(ConfigError, match=r"cannot connect to postgresql\+asyncpg://u:\*\*\*@"):
        await Store.open("postgresql://u:secret@127.0.0.1:1/nothing")
    with pytest.raises(ConfigError, match="PostgreSQL only"):
        await Store.open(f"sqlite:///{tmp_path / 'x.db'}", schema="s")
    with pytest.raises(ConfigError, match="plain SQL identifier"):
        await Store.open(POSTGRES_URL, schema='x"; DROP TABLE y; --')


async def test_0005_turns_the_admin_into_the_first_owner(store: Store) -> None:
    """An install at 0004 with an admin password and keys comes out of 0005 with an owner named
    admin holding the same password hash (so its sessions survive) and owning every key; and
    downgrading gives the admin row back."""
    await downgrade(store.engine, "0004")
    stored = users.hash_password("the old admin password")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with store.engine.begin() as connection:
        await connection.execute(text(
            "INSERT INTO admin (id, password_hash, created_at, updated_at) "
            "VALUES (1, :h, :c, :u)"), {"h": stored, "c": when.replace(tzinfo=None),
                                        "u": when.replace(tzinfo=None)})
        for n in (1, 2):
            await connection.execute(text(
                "INSERT INTO api_keys (id, name, prefix, hash, created_at) "
                "VALUES (:id, :name, 'pdr_sk_xxxxx', :hash, :c)"),
                {"id": f"key_{n}", "name": f"k{n}", "hash": f"{n}" * 64,
                 "c": when.replace(tzinfo=None)})
    await upgrade(store.engine, "head")
    async with store.session() as session:
        owner = await users.first_owner(session)
        assert owner is not None and owner.name == "admin" and owner.role == "owner"
        assert owner.password_hash == stored and not owner.must_change_password
        assert await users.verify_password("the old admin password", owner.password_hash)
        assert {k.user_id for k in await keys.list_keys(session)} == {owner.id}
    await downgrade(store.engine, "0004")
    async with store.engine.connect() as connection:
        row = (await connection.execute(text("SELECT id, password_hash FROM admin"))).one()
    assert tuple(row) == (1, stored)
    await upgrade(store.engine, "head")

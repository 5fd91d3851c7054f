"""Fixtures for a fresh store per test, on SQLite (a temporary file) and on PostgreSQL (a schema of
its own). A conftest that wants them imports them (``from store_targets import store, target,
pg_schema``).

Every test that takes ``store`` or ``target`` runs on both backends. The PostgreSQL half makes a
uniquely named schema, points the Store's ``search_path`` at it (so the tables and Alembic's version
table land there) and drops it with CASCADE afterwards. PostgreSQL being down is a failure, not a
skip: ``scripts/test.sh`` starts it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from suite_env import POSTGRES_URL, WAIT
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from pendra.server.store.db import Store

# Creating or dropping a schema is instant on a healthy server; this only bounds a broken one.
SCHEMA_DDL_TIMEOUT_S = 10 * WAIT


@dataclass(frozen=True)
class Target:
    """Where a test's database lives; ``open()`` opens (another) Store on it."""

    backend: str
    url: str
    schema: str | None = None

    async def open(self) -> Store:
        return await Store.open(self.url, schema=self.schema)


async def _schema_ddl(statement: str) -> None:
    engine = create_async_engine(POSTGRES_URL)
    try:
        async with asyncio.timeout(SCHEMA_DDL_TIMEOUT_S), engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A new, empty PostgreSQL schema, dropped (with everything in it) after the test."""
    name = "pendra_test_" + secrets.token_hex(6)
    await _schema_ddl(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await _schema_ddl(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """An empty database on each backend (nothing is opened yet)."""
    if request.param == "sqlite":
        # A directory that does not exist yet: opening the store must create it.
        return Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'state' / 'pendra.db'}")
    return Target("postgres", POSTGRES_URL, request.getfixturevalue("pg_schema"))


@pytest.fixture
async def store(target: Target) -> AsyncIterator[Store]:
    """A Store opened (and so migrated to head) on ``target``, closed after the test."""
    opened = await target.open()
    try:
        yield opened
    finally:
        await opened.close()

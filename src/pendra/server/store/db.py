"""The store's engine, sessions and migrations.

Rules:
- ``Store.open`` is the only way in: it makes the async engine, prepares the backend (SQLite: parent
  directories, foreign keys, WAL; PostgreSQL: an optional ``schema`` through ``search_path``) and
  migrates to head with Alembic before anything else can use it. Opening is idempotent, and any
  number of Stores (different files, different schemas) may be open in one process.
- Migrations live in ``migrations/`` inside the package and are driven from code: no alembic.ini.
  Alembic runs synchronously inside ``AsyncConnection.run_sync``. Its ``op``/``context`` proxies are
  process-wide, so migrations in one event loop take turns (``_migration_lock``); on PostgreSQL an
  advisory lock also keeps two processes from migrating the same database at once.
- Failing to reach the database is a ``ConfigError`` naming the URL with its password hidden.
- A SQLite database file is private: ``Store.open`` creates it 0600 (its folder 0700) before SQLite
  opens it, and tightens one an earlier version left wider. Creating it ourselves, rather than
  changing the umask around SQLite's open, touches no process-wide state (the umask is shared by
  every thread) and leaves no window where the file exists readable by others; SQLite then gives
  its ``-wal`` and ``-shm`` side files the database file's own mode.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (AsyncEngine, AsyncSession, async_sessionmaker,
                                    create_async_engine)

from pendra.errors import ConfigError
from pendra.home import too_open

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Drivers people write in DATABASE_URL, mapped to the async driver Pendra ships with.
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
                  "postgres": "postgresql+asyncpg"}
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Any fixed 64-bit number: the key of the PostgreSQL advisory lock held while migrating.
_PG_MIGRATION_LOCK = 0x70656E647261  # "pendra"

_migration_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _migration_locks.get(loop)
    if lock is None:
        lock = _migration_locks[loop] = asyncio.Lock()
    return lock


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


async def _run_alembic(engine: AsyncEngine, action: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = _alembic_config(connection)
        if action == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)

    async with _migration_lock(), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                     {"key": _PG_MIGRATION_LOCK})
        await connection.run_sync(run)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` up to ``revision``."""
    await _run_alembic(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Migrate the database behind ``engine`` down to ``revision`` (``base`` drops every table)."""
    await _run_alembic(engine, "downgrade", revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision())


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database_url: not a database URL: {exc}") from exc
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode"):
        return None
    return Path(database).expanduser()


# The files SQLite keeps beside a database: the write-ahead log, its shared-memory index, and the
# rollback journal.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _make_private(path: Path) -> None:
    """Create the SQLite file ``path`` 0600 if it is missing; tighten it and its side files to 0600
    if they are readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # empty = a valid db
    except FileExistsError:
        pass
    for file in (path, *(path.with_name(path.name + side) for side in _SQLITE_SIDE_FILES)):
        if too_open(file):
            try:
                file.chmod(0o600)
            except OSError as exc:
                log.warning("%s is readable by others and cannot be made private: %s", file, exc)
            else:
                log.warning("%s was readable by others; made it private (0600)", file)


def _enable_sqlite_features(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets the CLI read and write while the server holds the database open.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _create_engine(url: URL, schema: str | None) -> AsyncEngine:
    connect_args: dict[str, Any] = {}
    backend = url.get_backend_name()
    if schema is not None:
        if backend != "postgresql":
            raise ConfigError(f"a store schema is for PostgreSQL only, not {backend}")
        if not _SCHEMA_NAME.match(schema):
            raise ConfigError(f"store schema {schema!r} is not a plain SQL identifier")
        connect_args["server_settings"] = {"search_path": schema}
    if backend == "sqlite":
        path = _sqlite_file(url)
        if path is not None:
            try:
                _make_private(path)
            except OSError as exc:
                raise ConfigError(f"database_url: cannot create {path}: {exc}") from exc
    try:
        engine = create_async_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except (ArgumentError, SQLAlchemyError, ImportError) as exc:
        raise ConfigError(f"database_url: cannot use {url.render_as_string()}: {exc}") from exc
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _enable_sqlite_features)
    return engine


class Store:
    """One database: an async engine, a session factory, and the schema at head."""

    def __init__(self, engine: AsyncEngine, schema: str | None = None) -> None:
        self._engine = engine
        self._schema = schema
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, *, schema: str | None = None) -> Store:
        """Open the database at ``url`` and migrate it to head.

        ``schema`` (PostgreSQL only) puts every table, and Alembic's version table, in that
        existing schema instead of the user's default one.
        """
        engine = _create_engine(_parse_url(url), schema)
        store = cls(engine, schema)
        try:
            try:
                async with engine.connect():
                    pass
            except (OSError, SQLAlchemyError) as exc:
                raise ConfigError(f"database_url: cannot connect to {store.url}: {exc}") from exc
            await upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return store

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def schema(self) -> str | None:
        return self._schema

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def session(self) -> AsyncSession:
        """A new session; use ``async with store.session() as session:`` and commit in it."""
        return self._sessions()

    async def change(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in a session of its own and commit it; nothing is kept if it raises."""
        async with self.session() as session:
            result = await work(session)
            await session.commit()
        return result

    async def close(self) -> None:
        await self._engine.dispose()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

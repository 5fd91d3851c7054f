"""Alembic environment for the store, for async engines.

``pendra.server.store.db`` runs migrations inside ``AsyncConnection.run_sync`` and hands the sync
connection over in ``config.attributes["connection"]``; the tables land in whatever schema the
connection's ``search_path`` names, and so does ``alembic_version``. Run from the ``alembic``
command line instead (an ini whose ``script_location`` points here and whose ``sqlalchemy.url`` is
an async URL), this file makes its own async engine and does the same through ``run_sync``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from pendra.server.store.tables import Base


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the store's migrations run online only (no --sql)")
given = context.config.attributes.get("connection")
if given is not None:
    run_migrations(given)
else:
    asyncio.run(run_with_own_engine(context.config.get_main_option("sqlalchemy.url") or ""))

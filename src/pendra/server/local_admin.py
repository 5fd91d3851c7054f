"""Administrative actions the CLI runs on the control-plane host, straight against the store.

Each function opens the store named by the settings, does one thing in one transaction, and closes
it. They return plain values for the CLI to print; errors are the store's own (NotFound, Conflict,
InvalidRequest).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pendra.config import ServerSettings
from pendra.server import enrolment, usage_csv
from pendra.server.limits import KeyLimits
from pendra.server.store import admin, keys, usage, workers
from pendra.server.store.db import Store


async def _with_store(settings: ServerSettings, action: Any) -> Any:
    store = await Store.open(settings.database_url)
    try:
        async with store.session() as session:
            result = await action(session)
            await session.commit()
            return result
    finally:
        await store.close()


async def create_key(settings: ServerSettings, name: str,
                     limits: KeyLimits | None = None) -> tuple[Any, str]:
    return await _with_store(settings, lambda s: keys.create_key(s, name, limits))


async def set_key_limits(settings: ServerSettings, key: str, limits: KeyLimits) -> Any:
    return await _with_store(settings, lambda s: keys.set_limits(s, key, limits))


async def list_keys(settings: ServerSettings) -> list[Any]:
    return await _with_store(settings, keys.list_keys)


async def revoke_key(settings: ServerSettings, key: str) -> Any:
    return await _with_store(settings, lambda s: keys.revoke_key(s, key))


async def add_worker(settings: ServerSettings, name: str) -> enrolment.Enrolment:
    """Enrol a worker (server/enrolment.py: only the public half of its key pair is stored)."""
    return await _with_store(settings, lambda s: enrolment.enrol_worker(s, name))


async def list_workers(settings: ServerSettings) -> list[Any]:
    return await _with_store(settings, workers.list_workers)


async def remove_worker(settings: ServerSettings, worker: str) -> Any:
    return await _with_store(settings, lambda s: workers.remove_worker(s, worker))


async def usage_summary(settings: ServerSettings, since: datetime | None,
                        until: datetime | None = None) -> dict[str, Any]:
    return await _with_store(settings, lambda s: usage.usage_summary(s, since, until))


async def export_usage(settings: ServerSettings, since: datetime | None, until: datetime | None,
                       write: Callable[[str], None]) -> None:
    """Write the CSV of the records of [since, until) (server/usage_csv.py) a batch at a time."""
    store = await Store.open(settings.database_url)
    try:
        async for chunk in usage_csv.export(store, since, until):
            write(chunk)
    finally:
        await store.close()


async def reset_admin_password(settings: ServerSettings, password: str | None) -> str:
    """Set the console admin password (``password``, or a generated one) and return it. Every
    console session ends: a session cookie carries a fingerprint of the old hash."""
    new = admin.generate_password() if password is None else password
    await _with_store(settings, lambda s: admin.set_admin_password(s, new))
    return new

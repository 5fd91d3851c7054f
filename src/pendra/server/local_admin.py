"""Administrative actions the CLI runs on the control-plane host, straight against the store.

Each function opens the store named by the settings, does one thing in one transaction, and closes
it. They return plain values for the CLI to print; errors are the store's own (NotFound, Conflict,
InvalidRequest).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pendra.config import ServerSettings
from pendra.protocol import signing
from pendra.server.store import admin, keys, usage, workers
from pendra.server.store.db import Store


@dataclass(frozen=True)
class NewWorker:
    id: str
    name: str
    private_key: str


async def _with_store(settings: ServerSettings, action: Any) -> Any:
    store = await Store.open(settings.database_url)
    try:
        async with store.session() as session:
            result = await action(session)
            await session.commit()
            return result
    finally:
        await store.close()


async def create_key(settings: ServerSettings, name: str) -> tuple[Any, str]:
    return await _with_store(settings, lambda s: keys.create_key(s, name))


async def list_keys(settings: ServerSettings) -> list[Any]:
    return await _with_store(settings, keys.list_keys)


async def revoke_key(settings: ServerSettings, key: str) -> Any:
    return await _with_store(settings, lambda s: keys.revoke_key(s, key))


async def add_worker(settings: ServerSettings, name: str) -> NewWorker:
    """Enrol a worker: the key pair is made here, only the public half is stored."""
    private_key, public_key = signing.generate_keypair()
    row = await _with_store(settings, lambda s: workers.enrol_worker(s, name, public_key))
    return NewWorker(row.id, row.name, private_key)


async def list_workers(settings: ServerSettings) -> list[Any]:
    return await _with_store(settings, workers.list_workers)


async def remove_worker(settings: ServerSettings, worker: str) -> Any:
    return await _with_store(settings, lambda s: workers.remove_worker(s, worker))


async def usage_summary(settings: ServerSettings, since: datetime | None) -> dict[str, Any]:
    return await _with_store(settings, lambda s: usage.usage_summary(s, since))


async def reset_admin_password(settings: ServerSettings, password: str | None) -> str:
    """Set the console admin password (``password``, or a generated one) and return it. Every
    console session ends: a session cookie carries a fingerprint of the old hash."""
    new = admin.generate_password() if password is None else password
    await _with_store(settings, lambda s: admin.set_admin_password(s, new))
    return new

"""Administrative actions the CLI runs on the control-plane host, straight against the store.

Each function opens the store named by the settings, does one thing in one transaction (with its
audit row, the actor being ``cli``), and closes it. They return plain values for the CLI to print;
errors are the store's own (NotFound, Conflict, InvalidRequest). Users are managed through
server/people.py, as the console and the admin API do; a change to a user reaches a running
control plane on its next console request (sessions read the user every time), and a user's
revoked keys within its key index's sync interval.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pendra.config import ServerSettings
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.server import enrolment, people, usage_csv
from pendra.server.limits import KeyLimits
from pendra.server.roles import CLI
from pendra.server.store import admin, audit, keys, usage, users, workers
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


async def create_key(settings: ServerSettings, name: str, limits: KeyLimits | None = None,
                     user: str | None = None) -> tuple[Any, str]:
    """A key for ``user`` (a name or id; the first owner when None)."""
    async def work(s: AsyncSession) -> tuple[Any, str]:
        user_id = (await users.find_user(s, user)).id if user else None
        row, raw = await keys.create_key(s, name, limits, user_id=user_id)
        owner = (await keys.owners(s)).get(row.user_id or "", "nobody")
        detail = f"for {owner}" + (f"; limits: {limits.describe()}"
                                   if limits and limits.describe() != "none" else "")
        await audit.record(s, CLI, "key.created", f"{row.name} ({row.id})", detail)
        return row, raw

    return await _with_store(settings, work)


async def set_key_limits(settings: ServerSettings, key: str, limits: KeyLimits) -> Any:
    async def work(s: AsyncSession) -> Any:
        row = await keys.set_limits(s, key, limits)
        await audit.record(s, CLI, "key.limits_changed", f"{row.name} ({row.id})",
                           keys.limits_of(row).describe())
        return row

    return await _with_store(settings, work)


async def list_keys(settings: ServerSettings) -> list[tuple[Any, str]]:
    """Every key with its owner's name."""
    async def work(s: AsyncSession) -> list[tuple[Any, str]]:
        owners = await keys.owners(s)
        return [(row, owners.get(row.user_id or "", "")) for row in await keys.list_keys(s)]

    return await _with_store(settings, work)


async def revoke_key(settings: ServerSettings, key: str) -> Any:
    async def work(s: AsyncSession) -> Any:
        already = (await keys.find_key(s, key)).revoked
        row = await keys.revoke_key(s, key)
        if not already:
            await audit.record(s, CLI, "key.revoked", f"{row.name} ({row.id})")
        return row

    return await _with_store(settings, work)


async def add_worker(settings: ServerSettings, name: str) -> enrolment.Enrolment:
    """Enrol a worker (server/enrolment.py: only the public half of its key pair is stored)."""
    return await _with_store(settings, lambda s: enrolment.enrol_recorded(s, CLI, name))


async def list_workers(settings: ServerSettings) -> list[Any]:
    return await _with_store(settings, workers.list_workers)


async def remove_worker(settings: ServerSettings, worker: str) -> Any:
    return await _with_store(settings, lambda s: enrolment.remove_recorded(s, CLI, worker))


async def _people(settings: ServerSettings, action: Any) -> Any:
    store = await Store.open(settings.database_url)
    try:
        return await action(store)
    finally:
        await store.close()


async def add_user(settings: ServerSettings, name: str, role: str) -> tuple[Any, str]:
    return await _people(settings, lambda st: people.add_user(st, CLI, name, role))


async def list_users(settings: ServerSettings) -> list[tuple[Any, int]]:
    """Every user with how many live keys they hold."""
    async def work(s: AsyncSession) -> list[tuple[Any, int]]:
        live: dict[str, int] = {}
        for key in await keys.list_keys(s):
            if key.revoked_at is None and key.user_id:
                live[key.user_id] = live.get(key.user_id, 0) + 1
        return [(row, live.get(row.id, 0)) for row in await users.list_users(s)]

    return await _with_store(settings, work)


async def set_user_disabled(settings: ServerSettings, name: str,
                            disabled: bool) -> tuple[Any, list[Any]]:
    return await _people(settings, lambda st: people.set_disabled(st, None, CLI, name, disabled))


async def remove_user(settings: ServerSettings, name: str) -> tuple[Any, list[Any]]:
    return await _people(settings, lambda st: people.remove_user(st, None, CLI, name))


async def set_user_role(settings: ServerSettings, name: str, role: str) -> Any:
    return await _people(settings, lambda st: people.set_role(st, CLI, name, role))


async def reset_user_password(settings: ServerSettings, name: str,
                              password: str | None) -> tuple[Any, str]:
    return await _people(settings, lambda st: people.reset_password(st, CLI, name, password))


async def list_audit(settings: ServerSettings, since: datetime | None) -> list[Any]:
    return await _with_store(settings, lambda s: audit.list_audit(s, since))


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
    """Set the first owner's password (``password``, or a generated one) and return it. Every
    console session of theirs ends: a session cookie carries a fingerprint of the old hash."""
    new = admin.generate_password() if password is None else password

    async def work(s: AsyncSession) -> Any:
        row = await admin.set_admin_password(s, new)
        await audit.record(s, CLI, "user.password_reset", f"{row.name} ({row.id})")
        return row

    await _with_store(settings, work)
    return new

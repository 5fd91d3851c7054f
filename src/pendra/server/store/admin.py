"""The console's first owner, under the names it had when the console had one admin account.

The console now has users (store/users.py); what was "the admin" is the oldest owner, named
``admin`` by the first start and by the 0005 migration. These functions keep the first start,
``pendra admin reset-password`` and older tools working against it; the password rules and
hashing are store/users.py's.

Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import Conflict, NotFound
from pendra.server.store.tables import User
from pendra.server.store.users import (check_password, ensure_first_owner, first_owner,
                                       generate_password, hash_password, set_password,
                                       verify_password)

__all__ = ["check_password", "ensure_admin", "generate_password", "get_admin", "hash_password",
           "set_admin_password", "stored_hash", "verify_admin_password", "verify_password"]


async def get_admin(session: AsyncSession) -> User | None:
    """The first owner, or None before the first start."""
    return await first_owner(session)


async def stored_hash(session: AsyncSession) -> str | None:
    row = await get_admin(session)
    return None if row is None else row.password_hash


async def set_admin_password(session: AsyncSession, password: str) -> User:
    """Set the first owner's password (creating it, named ``admin``, if there are no users)."""
    row = await get_admin(session)
    if row is None:
        if await ensure_first_owner(session) is None:
            raise Conflict("there are users but no enabled owner; enable one with `pendra users "
                           "enable`")
        row = await get_admin(session)
        if row is None:
            raise NotFound("no owner")
    return await set_password(session, row.id, password)


async def verify_admin_password(session: AsyncSession, password: str) -> bool:
    """For scripts and tests (hashes while ``session`` may hold a connection)."""
    return await verify_password(password, await stored_hash(session))


async def ensure_admin(session: AsyncSession) -> str | None:
    """Create the first owner with a generated password and return it; None if users exist."""
    return await ensure_first_owner(session)

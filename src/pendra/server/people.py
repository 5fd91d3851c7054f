"""Managing console users: add, disable, enable, remove, change roles and passwords.

The console's Users page, the admin API (``/api/v1/users``) and ``pendra users`` all come here, so
each rule has one owner:
- Only an owner may manage users (``require_owner``); a user changes their own password.
- Each change and its audit row are one transaction (``Store.change``).
- Nobody disables, removes or demotes themselves (another owner must), and the last owner stays
  (store/users.py).
- Disabling or removing a user revokes their live API keys (store/users.py) and, given the app's
  key index, refuses them in this process at once; their console sessions end on their next
  request (server/sessions.py reads the user on every request).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import Conflict
from pendra.server.key_index import KeyIndex
from pendra.server.roles import require_owner
from pendra.server.store import audit
from pendra.server.store import users as user_store
from pendra.server.store.audit import Actor
from pendra.server.store.db import Store
from pendra.server.store.tables import ApiKey, User


def _target(row: User) -> str:
    return f"{row.name} ({row.id})"


def _not_self(actor: Actor, row: User, what: str) -> None:
    if actor.user_id is not None and actor.user_id == row.id:
        raise Conflict(f"you cannot {what} yourself; another owner can")


async def key_owner(store: Store, actor: Actor, user: str | None) -> str | None:
    """The user id a new key made by ``actor`` is for: ``user`` (a name or id; only an owner may
    name someone else), else the actor themselves, else (the admin token, the CLI) None: the
    first owner."""
    if user is None or not user.strip():
        return actor.user_id
    async with store.session() as db:
        row = await user_store.find_user(db, user)
    if row.id != actor.user_id:
        require_owner(actor, "make API keys for other people")
    return row.id


async def list_users(store: Store, actor: Actor) -> list[User]:
    require_owner(actor, "see the users")
    async with store.session() as db:
        return await user_store.list_users(db)


async def add_user(store: Store, actor: Actor, name: str, role: str,
                   password: str | None = None) -> tuple[User, str]:
    """Invite a user; returns the row and their one-time password (changed at first sign-in)."""
    require_owner(actor, "add users")

    async def work(db: AsyncSession) -> tuple[User, str]:
        row, password_once = await user_store.add_user(db, name, role, password)
        await audit.record(db, actor, "user.added", _target(row), f"role {row.role}")
        return row, password_once

    return await store.change(work)


async def set_disabled(store: Store, keys: KeyIndex | None, actor: Actor, name: str,
                       disabled: bool) -> tuple[User, list[ApiKey]]:
    require_owner(actor, "disable users" if disabled else "enable users")

    async def work(db: AsyncSession) -> tuple[User, list[ApiKey]]:
        row = await user_store.find_user(db, name)
        if disabled:
            _not_self(actor, row, "disable")
        was = row.disabled
        row, revoked = await user_store.set_disabled(db, name, disabled)
        if was != disabled:
            detail = f"{len(revoked)} API key(s) revoked" if disabled else ""
            await audit.record(db, actor, "user.disabled" if disabled else "user.enabled",
                               _target(row), detail)
        return row, revoked

    row, revoked = await store.change(work)
    if keys is not None:
        keys.apply(revoked)
    return row, revoked


async def remove_user(store: Store, keys: KeyIndex | None, actor: Actor,
                      name: str) -> tuple[User, list[ApiKey]]:
    require_owner(actor, "remove users")

    async def work(db: AsyncSession) -> tuple[User, list[ApiKey]]:
        row = await user_store.find_user(db, name)
        _not_self(actor, row, "remove")
        target = _target(row)
        removed, revoked, heir = await user_store.remove_user(db, name, actor.user_id)
        await audit.record(db, actor, "user.removed", target,
                           f"{len(revoked)} API key(s) revoked; keys handed to {heir.name}")
        return removed, revoked

    row, revoked = await store.change(work)
    if keys is not None:
        keys.apply(revoked)
    return row, revoked


async def set_role(store: Store, actor: Actor, name: str, role: str) -> User:
    require_owner(actor, "change roles")

    async def work(db: AsyncSession) -> User:
        row = await user_store.find_user(db, name)
        if user_store.check_role(role) != row.role:
            _not_self(actor, row, "change the role of")
        row, before = await user_store.set_role(db, name, role)
        if before != row.role:
            await audit.record(db, actor, "user.role_changed", _target(row),
                               f"{before} → {row.role}")
        return row

    return await store.change(work)


async def reset_password(store: Store, actor: Actor, name: str,
                         password: str | None = None) -> tuple[User, str]:
    """Give a user a new password (generated unless given), to be changed at next sign-in; every
    session of theirs ends."""
    require_owner(actor, "reset other people's passwords")
    new = password if password is not None else user_store.generate_password()

    async def work(db: AsyncSession) -> User:
        row = await user_store.find_user(db, name)
        row = await user_store.set_password(db, row.id, new, must_change=actor.user_id != row.id)
        await audit.record(db, actor, "user.password_reset", _target(row))
        return row

    return await store.change(work), new


async def change_own_password(store: Store, actor: Actor, new: str) -> User:
    """The signed-in user's new password (they proved the current one); other sessions end."""
    assert actor.user_id is not None

    async def work(db: AsyncSession) -> User:
        row = await user_store.set_password(db, actor.user_id or "", new)
        await audit.record(db, actor, "password.changed", _target(row))
        return row

    return await store.change(work)

"""Console users: names, roles, passwords (salted scrypt), and who may still sign in.

Rules:
- A user has a unique name (an email or a name, ``clean_name``'s rules), a role (``owner`` or
  ``member``; server/roles.py says what each may do) and a password. The hash is stored as
  ``scrypt$n$r$p$salt_b64$hash_b64`` so its cost can be raised later without invalidating
  existing passwords: verification reads the parameters from the stored value.
- scrypt is slow on purpose (~50 ms of CPU), so it never runs on the event loop
  (``asyncio.to_thread``) and never while a session holds a pooled connection: functions that
  set a password hash it before touching the database, and a sign-in reads the stored hash
  (``credentials``), ends its session, then calls ``verify_password``.
- A password someone else chose (an invite, a reset by an owner or the CLI) is marked
  ``must_change_password``; the console asks the user for a new one before anything else.
- There is always at least one enabled owner once the first one exists: disabling, removing or
  demoting the last one is a Conflict.
- Disabling or removing a user revokes every live API key they hold, in the same transaction (a
  person who may not sign in may not use the API either); enabling them again does not bring the
  keys back (a revocation is never undone). A removed user's keys, revoked, are handed to the owner
  who removed them, so every key keeps an owner and its usage history stays listed.
- ``ensure_first_owner`` makes the first owner (named ``admin``) on first start (when there is no
  owner yet), with a generated
  password returned once, and gives it every key that has no owner yet.
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import Conflict, InvalidRequest, NotFound
from pendra.server.store import keys as key_store
from pendra.server.store.tables import ROLES, ApiKey, User, clean_name, utcnow

OWNER, MEMBER = ROLES
FIRST_OWNER_NAME = "admin"
# scrypt cost: 2**14 × 8 needs 16 MiB and ~50 ms per check, the usual interactive-login setting.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
PASSWORD_MIN_CHARS = 8
# scrypt is fine with long input, but a megabyte "password" is an attack, not a login.
PASSWORD_MAX_CHARS = 1024
GENERATED_PASSWORD_BYTES = 12
# Upper bound on stored parameters, so a tampered hash cannot make verification allocate gigabytes.
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES,
                          maxmem=_SCRYPT_MAXMEM)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a stored ``scrypt$…`` hash; False for a malformed one."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        actual = _scrypt(password, salt, int(n), int(r), int(p))
    except (ValueError, OverflowError):  # bad fields or base64, or parameters scrypt refuses
        return False
    return hmac.compare_digest(actual, expected)


def generate_password() -> str:
    """A new random password (16 URL-safe characters)."""
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def _check_new_password(password: str) -> None:
    if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
        raise InvalidRequest(f"a password must be {PASSWORD_MIN_CHARS} to "
                             f"{PASSWORD_MAX_CHARS} characters")


async def verify_password(password: str, stored: str | None) -> bool:
    """``check_password`` in a worker thread; False without a stored hash or for an overlong
    password (refused before any hashing)."""
    if stored is None or not password or len(password) > PASSWORD_MAX_CHARS:
        return False
    return await asyncio.to_thread(check_password, password, stored)




def check_role(role: str) -> str:
    role = role.strip().lower()
    if role not in ROLES:
        raise InvalidRequest(f"a role is one of {', '.join(ROLES)}, not {role!r}", param="role")
    return role


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def find_user(session: AsyncSession, name_or_id: str) -> User:
    """The user with this name (exact, then ignoring case) or id; NotFound otherwise."""
    wanted = name_or_id.strip()
    row = await session.scalar(select(User).where(or_(User.name == wanted, User.id == wanted)))
    if row is None:
        rows = list(await session.scalars(
            select(User).where(func.lower(User.name) == wanted.lower())))
        row = rows[0] if len(rows) == 1 else None
    if row is None:
        raise NotFound(f"no user '{wanted}'")
    return row


async def by_name(session: AsyncSession, name: str) -> User | None:
    """The user signing in as ``name`` (exact, then ignoring case), or None."""
    try:
        return await find_user(session, name)
    except NotFound:
        return None


async def list_users(session: AsyncSession) -> list[User]:
    """Every user, owners first, then by name."""
    rows = await session.scalars(select(User).order_by(User.role.desc(), User.name))
    return list(rows)


async def first_owner(session: AsyncSession) -> User | None:
    """The oldest enabled owner (the one ``pendra keys create`` gives keys to by default)."""
    return await session.scalar(
        select(User).where(User.role == OWNER, User.disabled_at.is_(None))
        .order_by(User.created_at, User.id).limit(1))


async def _enabled_owners(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User).where(
        User.role == OWNER, User.disabled_at.is_(None))) or 0)


async def _keep_an_owner(session: AsyncSession, row: User, what: str) -> None:
    if row.role == OWNER and row.disabled_at is None and await _enabled_owners(session) <= 1:
        raise Conflict(f"{row.name} is the last owner and cannot be {what}; make someone else an "
                       "owner first")


async def add_user(session: AsyncSession, name: str, role: str,
                   password: str | None = None) -> tuple[User, str]:
    """Add a user with ``password`` (or a generated one), to be changed at first sign-in; returns
    the row and the password, which exists only in this return value."""
    name, role = clean_name(name, "user"), check_role(role)
    password = generate_password() if password is None else password
    _check_new_password(password)
    digest = await asyncio.to_thread(hash_password, password)  # before the session connects
    if await by_name(session, name) is not None:
        raise Conflict(f"there is already a user named '{name}'")
    now = utcnow()
    row = User(id="user_" + secrets.token_hex(8), name=name, role=role, password_hash=digest,
               must_change_password=True, created_at=now, password_changed_at=now)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"there is already a user named '{name}'") from exc
    return row, password


async def ensure_first_owner(session: AsyncSession) -> str | None:
    """Create the first owner (``admin``) with a generated password and return the password; None
    when there is an owner already. Keys without an owner become the first owner's."""
    if await session.scalar(select(func.count()).select_from(User).where(User.role == OWNER)):
        return None
    row, password = await add_user(session, FIRST_OWNER_NAME, OWNER)
    row.must_change_password = False  # printed to the operator who started the server
    await key_store.adopt_orphans(session, row.id)
    await session.flush()
    return password


async def set_password(session: AsyncSession, user_id: str, password: str, *,
                       must_change: bool = False) -> User:
    """Set a user's password (hashed before the session is touched); ``must_change`` when someone
    other than the user chose it. Ends the user's sessions made with the old one."""
    _check_new_password(password)
    digest = await asyncio.to_thread(hash_password, password)
    row = await get_user(session, user_id)
    if row is None:
        raise NotFound(f"no user '{user_id}'")
    row.password_hash = digest
    row.password_changed_at = utcnow()
    row.must_change_password = must_change
    await session.flush()
    return row


async def credentials(session: AsyncSession, name: str) -> User | None:
    """The enabled user who signs in as ``name``, or None (unknown or disabled)."""
    row = await by_name(session, name)
    return row if row is not None and row.disabled_at is None else None


async def set_disabled(session: AsyncSession, name_or_id: str,
                       disabled: bool) -> tuple[User, list[ApiKey]]:
    """Disable (revoking their live keys) or enable a user; returns the row and revoked keys."""
    row = await find_user(session, name_or_id)
    revoked: list[ApiKey] = []
    if disabled and row.disabled_at is None:
        await _keep_an_owner(session, row, "disabled")
        row.disabled_at = utcnow()
        revoked = await key_store.revoke_keys_of(session, row.id)
    elif not disabled:
        row.disabled_at = None
    await session.flush()
    return row, revoked


async def set_role(session: AsyncSession, name_or_id: str, role: str) -> tuple[User, str]:
    """Give a user a role; returns the row and the role it had."""
    role = check_role(role)
    row = await find_user(session, name_or_id)
    before = row.role
    if before == OWNER and role != OWNER:
        await _keep_an_owner(session, row, "made a member")
    row.role = role
    await session.flush()
    return row, before


async def remove_user(session: AsyncSession, name_or_id: str,
                      heir_id: str | None) -> tuple[User, list[ApiKey], User]:
    """Remove a user: their live keys are revoked and all their keys handed to ``heir_id`` (the
    owner removing them; the first owner when None or when that is the user removed). Returns the
    removed row, the keys revoked, and the owner who has their keys now."""
    row = await find_user(session, name_or_id)
    await _keep_an_owner(session, row, "removed")
    heir = await get_user(session, heir_id) if heir_id else await first_owner(session)
    if heir is None or heir.id == row.id:
        heir = await session.scalar(select(User).where(User.role == OWNER, User.id != row.id,
                                                       User.disabled_at.is_(None))
                                    .order_by(User.created_at).limit(1))
    if heir is None:
        raise Conflict(f"{row.name} cannot be removed: no other owner to hand their keys to")
    revoked = await key_store.revoke_keys_of(session, row.id)
    await key_store.reassign_keys(session, row.id, heir.id)
    await session.delete(row)
    await session.flush()
    return row, revoked, heir

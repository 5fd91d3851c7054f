"""The console's admin account: one row, one password, kept as a salted scrypt hash.

Rules:
- The hash is stored as ``scrypt$n$r$p$salt_b64$hash_b64`` so its cost can be raised later without
  invalidating existing passwords: verification reads the parameters from the stored value.
- ``ensure_admin`` makes the row on first start with a generated password and returns it once; the
  caller prints it and it is never recoverable afterwards (``pendra admin reset-password`` on the
  control-plane host sets a new one).
- scrypt is slow on purpose (~50 ms of CPU), so it never runs on the event loop (``asyncio.to_thread``)
  and never while a session holds a pooled connection: ``set_admin_password`` hashes before it
  touches the database, and a sign-in reads the stored hash (``stored_hash``), ends its session,
  then calls ``verify_password``.
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import Conflict, InvalidRequest
from pendra.server.store.tables import Admin, utcnow

ADMIN_ID = 1
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
    """A new random admin password (16 URL-safe characters)."""
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def _check_new_password(password: str) -> None:
    if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
        raise InvalidRequest(f"the admin password must be {PASSWORD_MIN_CHARS} to "
                             f"{PASSWORD_MAX_CHARS} characters")


async def verify_password(password: str, stored: str | None) -> bool:
    """``check_password`` in a worker thread; False without a stored hash or for an overlong
    password (refused before any hashing)."""
    if stored is None or not password or len(password) > PASSWORD_MAX_CHARS:
        return False
    return await asyncio.to_thread(check_password, password, stored)


async def get_admin(session: AsyncSession) -> Admin | None:
    return await session.get(Admin, ADMIN_ID)


async def stored_hash(session: AsyncSession) -> str | None:
    """The admin's password hash, or None when there is no admin yet."""
    row = await get_admin(session)
    return None if row is None else row.password_hash


async def set_admin_password(session: AsyncSession, password: str) -> Admin:
    """Set the admin password, creating the admin row if there is none."""
    _check_new_password(password)
    digest = await asyncio.to_thread(hash_password, password)  # before the session connects
    now = utcnow()
    row = await get_admin(session)
    if row is None:
        row = Admin(id=ADMIN_ID, password_hash=digest, created_at=now, updated_at=now)
        session.add(row)
    else:
        row.password_hash = digest
        row.updated_at = now
    try:
        await session.flush()
    except IntegrityError as exc:  # another process created the row first
        raise Conflict("the admin account was created concurrently; try again") from exc
    return row


async def verify_admin_password(session: AsyncSession, password: str) -> bool:
    """Whether ``password`` is the admin password (False when there is no admin yet). Hashes
    while ``session`` may hold a connection: for scripts and tests; requests use ``stored_hash``
    then ``verify_password``."""
    return await verify_password(password, await stored_hash(session))


async def ensure_admin(session: AsyncSession) -> str | None:
    """Create the admin with a generated password and return it; None if the admin exists."""
    if await get_admin(session) is not None:
        return None
    password = generate_password()
    await set_admin_password(session, password)
    return password

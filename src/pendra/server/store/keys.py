"""Client API keys: creation, listing, revocation and authentication.

Rules:
- A raw key is ``pdr_sk_`` + 32 random URL-safe bytes. It is returned once by ``create_key`` and
  never stored: the store keeps its SHA-256 (looked up by equality, so no timing side channel on the
  secret) and its first ``PREFIX_CHARS`` characters for people to tell keys apart.
- A revoked key stops authenticating on the next request; revoking twice is not an error.
- Requests do not read this table: they authenticate against the server's in-memory index
  (server/key_index.py), built from ``key_rows`` and kept current by comparing ``key_version``.
  ``authenticate`` is the store's own answer, for code without an index (tests, tools).
- Keys are never deleted, and a revocation is never undone; a change of a key's limits moves its
  ``updated_at`` forward. That is what lets ``key_version`` (how many keys, how many revoked, the
  latest creation, revocation and limits change) tell an index that the table changed without
  reading it whole.
- A key's limits are stored as ``server/limits.py`` defines them (NULL: the default applies);
  ``set_limits`` changes only the ones it is given.
- Every key belongs to a user (``user_id``): ``create_key`` without one gives it to the first
  owner. ``revoke_keys_of`` and ``reassign_keys`` serve store/users.py when a user is disabled or
  removed.
- ``last_used_at`` is written later, in bulk, by ``stamp_last_used`` (see server/last_used.py),
  and only moves forward.
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import InvalidRequest, NotFound
from pendra.server.limits import NUMERIC, KeyLimits
from pendra.server.store.tables import ApiKey, User, clean_name, utcnow

KEY_PREFIX = "pdr_sk_"
KEY_RANDOM_BYTES = 32
# "pdr_sk_" and five random characters: enough to tell a handful of keys apart, too few to guess.
PREFIX_CHARS = 12
# token_urlsafe(32) is always 43 characters; a longer Authorization header is not one of ours.
RAW_MAX_CHARS = len(KEY_PREFIX) + 64

KeyVersion = tuple[int, int, datetime | None, datetime | None, datetime | None]


@dataclass(frozen=True)
class KeyRow:
    """What authentication and the limiter need of a key: no timestamps."""

    id: str
    name: str
    prefix: str
    hash: str
    revoked: bool
    limits: KeyLimits = field(default_factory=KeyLimits)
    user_id: str | None = None


def limits_of(row: ApiKey) -> KeyLimits:
    models = json.loads(row.models) if row.models else None
    return KeyLimits(rpm=row.rpm, tpm=row.tpm, max_concurrent=row.max_concurrent,
                     monthly_tokens=row.monthly_tokens,
                     models=tuple(models) if models is not None else None)


def _store_limits(row: ApiKey, limits: KeyLimits, *, only_given: bool) -> None:
    for name in NUMERIC:
        value = getattr(limits, name)
        if value is not None or not only_given:
            setattr(row, name, value)
    if limits.models is not None or not only_given:
        row.models = json.dumps(list(limits.models)) if limits.models is not None else None


def well_formed(raw: str) -> bool:
    """Whether ``raw`` could be one of our keys at all (checked before hashing it)."""
    return raw.startswith(KEY_PREFIX) and len(raw) <= RAW_MAX_CHARS


def hash_key(raw: str) -> str:
    """The SHA-256 hex digest the store keeps for a raw key."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


async def _first_owner_id(session: AsyncSession) -> str | None:
    return await session.scalar(
        select(User.id).where(User.role == "owner", User.disabled_at.is_(None))
        .order_by(User.created_at, User.id).limit(1))


async def create_key(session: AsyncSession, name: str, limits: KeyLimits | None = None, *,
                     user_id: str | None = None) -> tuple[ApiKey, str]:
    """Make a key for ``user_id`` (the first owner when None); returns its row and the raw key,
    which exists only in this return value."""
    if user_id is None:
        user_id = await _first_owner_id(session)
    else:
        owner = await session.get(User, user_id)
        if owner is None or owner.disabled_at is not None:
            raise InvalidRequest("a key can only be made for an enabled user")
    raw = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
    row = ApiKey(id="key_" + secrets.token_hex(8), name=clean_name(name, "key"),
                 prefix=raw[:PREFIX_CHARS], hash=hash_key(raw), created_at=utcnow(),
                 user_id=user_id)
    _store_limits(row, limits or KeyLimits(), only_given=False)
    session.add(row)
    await session.flush()
    return row, raw


async def find_key(session: AsyncSession, key_id_or_prefix: str) -> ApiKey:
    """The key with this id, prefix or raw value (NotFound if none, InvalidRequest if several)."""
    wanted = key_id_or_prefix.strip().rstrip("…")
    rows = list(await session.scalars(select(ApiKey).where(
        or_(ApiKey.id == wanted, ApiKey.prefix == wanted, ApiKey.hash == hash_key(wanted)))))
    if not rows:
        raise NotFound(f"no API key '{wanted}'")
    if len(rows) > 1:
        raise InvalidRequest(f"'{wanted}' matches {len(rows)} keys; use the key id")
    return rows[0]


async def set_limits(session: AsyncSession, key_id_or_prefix: str, limits: KeyLimits, *,
                     replace: bool = False) -> ApiKey:
    """Change the limits given in ``limits`` of a live key (None fields stay as they are), or
    with ``replace`` set them all (None: back to the default)."""
    row = await find_key(session, key_id_or_prefix)
    if row.revoked_at is not None:
        raise InvalidRequest(f"API key '{row.name}' ({row.id}) is revoked; its limits no longer "
                             "matter")
    _store_limits(row, limits, only_given=not replace)
    now = utcnow()
    # Strictly later than the last change, so key_version moves even within one clock tick.
    row.updated_at = now if row.updated_at is None or now > row.updated_at else (
        row.updated_at + timedelta(microseconds=1))
    await session.flush()
    return row


async def list_keys(session: AsyncSession, user_id: str | None = None) -> list[ApiKey]:
    """Every key (or every key of ``user_id``), revoked ones included, newest first."""
    stmt = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    if user_id is not None:
        stmt = stmt.where(ApiKey.user_id == user_id)
    return list(await session.scalars(stmt))


async def owners(session: AsyncSession) -> dict[str, str]:
    """Each user's name by id, for showing whose keys are whose."""
    return {row.id: row.name for row in await session.execute(select(User.id, User.name))}


async def revoke_keys_of(session: AsyncSession, user_id: str) -> list[ApiKey]:
    """Revoke every live key of ``user_id``; returns the keys revoked."""
    rows = list(await session.scalars(select(ApiKey).where(ApiKey.user_id == user_id,
                                                           ApiKey.revoked_at.is_(None))))
    now = utcnow()
    for row in rows:
        row.revoked_at = now
    await session.flush()
    return rows


async def reassign_keys(session: AsyncSession, from_user: str, to_user: str) -> int:
    """Hand every key of ``from_user`` to ``to_user``; how many."""
    result = await session.execute(update(ApiKey).where(ApiKey.user_id == from_user)
                                   .values(user_id=to_user)
                                   .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


async def adopt_orphans(session: AsyncSession, user_id: str) -> int:
    """Give every key without an owner to ``user_id``; how many."""
    result = await session.execute(update(ApiKey).where(ApiKey.user_id.is_(None))
                                   .values(user_id=user_id)
                                   .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


async def revoke_key(session: AsyncSession, key_id_or_prefix: str) -> ApiKey:
    """Revoke the key with this id, prefix or raw value (NotFound if none, InvalidRequest if
    several match); revoking a revoked key returns it unchanged."""
    row = await find_key(session, key_id_or_prefix)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return row


async def authenticate(session: AsyncSession, raw: str) -> ApiKey | None:
    """The live key for a raw key, or None when it is unknown or revoked. Writes nothing."""
    if not well_formed(raw):
        return None
    row = await session.scalar(select(ApiKey).where(ApiKey.hash == hash_key(raw)))
    if row is None or row.revoked_at is not None:
        return None
    return row


async def key_version(session: AsyncSession) -> KeyVersion:
    """A cheap summary of the table that changes whenever a key is created or revoked: one
    aggregate query, no rows."""
    row = (await session.execute(select(
        func.count(), func.count(ApiKey.revoked_at), func.max(ApiKey.created_at),
        func.max(ApiKey.revoked_at), func.max(ApiKey.updated_at)).select_from(ApiKey))).one()
    return int(row[0]), int(row[1]), row[2], row[3], row[4]


async def key_rows(session: AsyncSession) -> list[KeyRow]:
    """Every key, as the in-memory index holds it."""
    return [key_row(row) for row in await session.scalars(select(ApiKey))]


def key_row(row: ApiKey) -> KeyRow:
    return KeyRow(row.id, row.name, row.prefix, row.hash, row.revoked_at is not None,
                  limits_of(row), row.user_id)


async def stamp_last_used(session: AsyncSession, stamps: dict[str, datetime]) -> None:
    """Move each key's ``last_used_at`` forward to its stamp (never back; missing keys are
    skipped)."""
    for key_id, when in sorted(stamps.items()):
        await session.execute(
            update(ApiKey).where(ApiKey.id == key_id)
            .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < when))
            .values(last_used_at=when).execution_options(synchronize_session=False))

"""Client API keys: creation, listing, revocation and authentication.

Rules:
- A raw key is ``pdr_sk_`` + 32 random URL-safe bytes. It is returned once by ``create_key`` and
  never stored: the store keeps its SHA-256 (looked up by equality, so no timing side channel on the
  secret) and its first ``PREFIX_CHARS`` characters for people to tell keys apart.
- A revoked key stops authenticating on the next request; revoking twice is not an error.
- ``authenticate`` only reads: a request's authentication never waits on, or fails with, a write.
  ``last_used_at`` is written later, in bulk, by ``stamp_last_used`` (see server/last_used.py),
  and only moves forward; ``needs_stamp`` says whether a use is worth recording at all (at most
  once per ``LAST_USED_RESOLUTION`` per key, so a busy key costs no write per request).
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import InvalidRequest, NotFound
from pendra.server.store.tables import ApiKey, clean_name, utcnow

KEY_PREFIX = "pdr_sk_"
KEY_RANDOM_BYTES = 32
# "pdr_sk_" and five random characters: enough to tell a handful of keys apart, too few to guess.
PREFIX_CHARS = 12
LAST_USED_RESOLUTION = timedelta(minutes=1)
# token_urlsafe(32) is always 43 characters; a longer Authorization header is not one of ours.
_RAW_MAX_CHARS = len(KEY_PREFIX) + 64


def hash_key(raw: str) -> str:
    """The SHA-256 hex digest the store keeps for a raw key."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


async def create_key(session: AsyncSession, name: str) -> tuple[ApiKey, str]:
    """Make a key; returns its row and the raw key, which exists only in this return value."""
    raw = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
    row = ApiKey(id="key_" + secrets.token_hex(8), name=clean_name(name, "key"),
                 prefix=raw[:PREFIX_CHARS], hash=hash_key(raw), created_at=utcnow())
    session.add(row)
    await session.flush()
    return row, raw


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, revoked ones included, newest first."""
    rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id))
    return list(rows)


async def revoke_key(session: AsyncSession, key_id_or_prefix: str) -> ApiKey:
    """Revoke the key with this id, prefix or raw value (NotFound if none, InvalidRequest if
    several match); revoking a revoked key returns it unchanged."""
    wanted = key_id_or_prefix.strip().rstrip("…")
    rows = list(await session.scalars(select(ApiKey).where(
        or_(ApiKey.id == wanted, ApiKey.prefix == wanted, ApiKey.hash == hash_key(wanted)))))
    if not rows:
        raise NotFound(f"no API key '{wanted}'")
    if len(rows) > 1:
        raise InvalidRequest(f"'{wanted}' matches {len(rows)} keys; use the key id")
    row = rows[0]
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return row


async def authenticate(session: AsyncSession, raw: str) -> ApiKey | None:
    """The live key for a raw key, or None when it is unknown or revoked. Writes nothing."""
    if not raw.startswith(KEY_PREFIX) or len(raw) > _RAW_MAX_CHARS:
        return None
    row = await session.scalar(select(ApiKey).where(ApiKey.hash == hash_key(raw)))
    if row is None or row.revoked_at is not None:
        return None
    return row


def needs_stamp(row: ApiKey, now: datetime) -> bool:
    """Whether a use of ``row`` at ``now`` should move its ``last_used_at``."""
    return row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION


async def stamp_last_used(session: AsyncSession, stamps: dict[str, datetime]) -> None:
    """Move each key's ``last_used_at`` forward to its stamp (never back; missing keys are
    skipped)."""
    for key_id, when in sorted(stamps.items()):
        await session.execute(
            update(ApiKey).where(ApiKey.id == key_id)
            .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < when))
            .values(last_used_at=when).execution_options(synchronize_session=False))

"""Revoked console sessions: a session id signed out before its cookie expires.

Rules:
- A session lives in its signed cookie (see server/sessions.py); the store keeps only the ids
  of sessions ended early, each until the moment its cookie would have expired anyway, so every
  replica and every restart refuses a signed-out cookie.
- Revoking prunes the rows whose expiry has passed, so the table holds at most the sessions signed
  out within one session lifetime. Revoking twice is not an error.
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import InvalidRequest
from pendra.server.store.tables import SESSION_ID_MAX_CHARS, RevokedSession, utcnow


async def revoke_session(session: AsyncSession, sid: str, expires_at: datetime) -> None:
    """Refuse session ``sid`` from now until ``expires_at``; prune expired revocations."""
    if not sid or len(sid) > SESSION_ID_MAX_CHARS:
        raise InvalidRequest("not a console session id")
    await prune_revoked(session, utcnow())
    if await session.get(RevokedSession, sid) is None:
        session.add(RevokedSession(sid=sid, expires_at=expires_at))
    await session.flush()


async def is_revoked(session: AsyncSession, sid: str) -> bool:
    if not sid or len(sid) > SESSION_ID_MAX_CHARS:
        return False
    return await session.scalar(select(RevokedSession.sid).where(RevokedSession.sid == sid)) \
        is not None


async def prune_revoked(session: AsyncSession, now: datetime) -> int:
    """Forget revocations of sessions that have expired by ``now``; how many were forgotten."""
    result = await session.execute(delete(RevokedSession).where(RevokedSession.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)

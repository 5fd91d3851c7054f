"""Revoked console sessions: stored until they would have expired, then pruned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from pendra.errors import InvalidRequest
from pendra.server.store import sessions
from pendra.server.store.db import Store
from pendra.server.store.tables import RevokedSession, utcnow


async def test_a_revoked_session_stays_revoked_across_stores(store: Store, target: object) -> None:
    """A revocation is in the store, so another Store on the same database (a restart, another
    replica) sees it; revoking twice is fine."""
    later = utcnow() + timedelta(hours=1)
    async with store.session() as session:
        await sessions.revoke_session(session, "sid-1", later)
        await sessions.revoke_session(session, "sid-1", later)
        await session.commit()
    again = await target.open()  # type: ignore[attr-defined]
    try:
        async with again.session() as session:
            assert await sessions.is_revoked(session, "sid-1")
            assert not await sessions.is_revoked(session, "sid-2")
            assert not await sessions.is_revoked(session, "x" * 1000)
    finally:
        await again.close()


async def test_expired_revocations_are_pruned(store: Store) -> None:
    """Revoking prunes the revocations whose sessions have expired since; live ones stay."""
    now = utcnow()
    async with store.session() as session:
        await sessions.revoke_session(session, "old", now - timedelta(seconds=1))
        await sessions.revoke_session(session, "live", now + timedelta(hours=1))
        await session.commit()
    async with store.session() as session:
        await sessions.revoke_session(session, "new", now + timedelta(hours=2))
        await session.commit()
        left = set(await session.scalars(select(RevokedSession.sid)))
        assert left == {"live", "new"}
        assert await sessions.prune_revoked(session, now + timedelta(hours=3)) == 2
        assert await session.scalar(select(func.count()).select_from(RevokedSession)) == 0


async def test_revoke_refuses_what_is_not_a_session_id(store: Store) -> None:
    """An empty or overlong id is refused before it reaches the table."""
    async with store.session() as session:
        with pytest.raises(InvalidRequest):
            await sessions.revoke_session(session, "", utcnow())
        with pytest.raises(InvalidRequest):
            await sessions.revoke_session(session, "s" * 65, utcnow())

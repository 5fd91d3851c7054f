"""Stored Responses API answers: what ``store: true`` keeps, for ``previous_response_id``,
``GET /responses/{id}`` (and its input items) and ``DELETE``.

Rules:
- A row is one response: the whole conversation that led to it (``input_items``: the earlier
  turns' input and output items, then this request's input) and the response object, both JSON.
  Continuing from a row therefore needs that one row, never a walk up a chain that may have
  expired or been deleted link by link.
- A row belongs to the API key that created it: every read and delete names the key, and another
  key's row is indistinguishable from a missing one. Deleting the key deletes its rows.
- A row lives until ``expires_at`` (the retention the server was configured with when it was
  written); expired rows are never returned, and writing a row first deletes every expired one, so
  the table holds at most one retention period's worth. The content stays in this store: it is
  never sent anywhere else.
- A row is written whole in one statement (the caller's transaction) or not at all.
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.server.store.tables import ID_MAX_CHARS, MODEL_MAX_CHARS, StoredResponse, utcnow


@dataclass(frozen=True)
class Kept:
    """A stored response as the API uses it."""

    id: str
    key_id: str
    input_items: list[dict[str, Any]]
    response: dict[str, Any]
    created_at: datetime
    expires_at: datetime


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def keep_response(session: AsyncSession, *, response_id: str, key_id: str, model: str,
                        input_items: list[dict[str, Any]], response: dict[str, Any],
                        retention: timedelta, now: datetime | None = None) -> None:
    """Store ``response`` (and the conversation that led to it) for ``retention``; expired rows
    are deleted first."""
    now = now or utcnow()
    if not response_id or len(response_id) > ID_MAX_CHARS:
        raise ValueError(f"not a response id: {response_id!r}")
    await prune_expired(session, now)
    session.add(StoredResponse(id=response_id, key_id=key_id, model=model[:MODEL_MAX_CHARS],
                               created_at=now, expires_at=now + retention,
                               input_items=_dumps(input_items), response=_dumps(response)))
    await session.flush()


async def get_response(session: AsyncSession, response_id: str, key_id: str,
                       now: datetime | None = None) -> Kept | None:
    """The live response ``response_id`` of ``key_id``; None if missing, expired or another's."""
    if not response_id or len(response_id) > ID_MAX_CHARS:
        return None
    row = await session.scalar(select(StoredResponse).where(
        StoredResponse.id == response_id, StoredResponse.key_id == key_id,
        StoredResponse.expires_at > (now or utcnow())))
    if row is None:
        return None
    return Kept(row.id, row.key_id, json.loads(row.input_items), json.loads(row.response),
                row.created_at, row.expires_at)


async def delete_response(session: AsyncSession, response_id: str, key_id: str,
                          now: datetime | None = None) -> bool:
    """Delete ``key_id``'s live response ``response_id``; whether there was one."""
    if not response_id or len(response_id) > ID_MAX_CHARS:
        return False
    result = await session.execute(delete(StoredResponse).where(
        StoredResponse.id == response_id, StoredResponse.key_id == key_id,
        StoredResponse.expires_at > (now or utcnow())))
    return bool(getattr(result, "rowcount", 0))


async def prune_expired(session: AsyncSession, now: datetime | None = None) -> int:
    """Delete every response whose retention has passed by ``now``; how many went."""
    result = await session.execute(
        delete(StoredResponse).where(StoredResponse.expires_at <= (now or utcnow())))
    return int(getattr(result, "rowcount", 0) or 0)

"""The audit log: who changed what, when, and from which address.

Rules:
- A row is written by ``record`` in the session of the change it describes, so it commits or rolls
  back with it: there is never a change without its row, nor a row without its change. (Changes
  that happen outside the store, such as a model install handed to a worker, are recorded in their
  own transaction once the request for them was accepted.)
- Rows name the actor (a user's name, ``admin token`` for the per-start admin token, ``cli`` for
  the CLI writing the store directly), the client address, the action (``ACTIONS``), its target (a
  key, worker, user or model, by name and id) and a short detail. Never prompt content, never a
  secret: no raw key, no password, no private key.
- Strings are clipped to their columns; the log is append-only (nothing here updates or deletes).
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import InvalidRequest
from pendra.server.store.tables import (AUDIT_ACTION_MAX_CHARS, AUDIT_ACTOR_MAX_CHARS,
                                        AUDIT_ADDRESS_MAX_CHARS, AUDIT_DETAIL_MAX_CHARS,
                                        AUDIT_TARGET_MAX_CHARS, Audit, utcnow)

ACTIONS = frozenset({
    "key.created", "key.revoked", "key.limits_changed",
    "worker.added", "worker.removed",
    "user.added", "user.disabled", "user.enabled", "user.removed", "user.role_changed",
    "user.password_reset", "password.changed",
    "model.install_requested", "model.install_cancelled", "model.remove_requested",
    "sign_in.failed",
})
LIST_MAX = 1000


@dataclass(frozen=True)
class Actor:
    """Who is acting: a console user (``user_id`` set), the admin token, or the local CLI."""

    name: str
    role: str
    user_id: str | None = None
    address: str = ""

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"


def _clip(value: str, limit: int) -> str:
    value = "".join(ch if ch.isprintable() else " " for ch in value)
    return value if len(value) <= limit else value[: limit - 1] + "…"


async def record(session: AsyncSession, actor: Actor, action: str, target: str = "",
                 detail: str = "") -> Audit:
    """Add one audit row to ``session``'s transaction."""
    if action not in ACTIONS:
        raise InvalidRequest(f"unknown audit action {action!r}")
    row = Audit(created_at=utcnow(), user_id=actor.user_id,
                actor=_clip(actor.name, AUDIT_ACTOR_MAX_CHARS),
                address=_clip(actor.address, AUDIT_ADDRESS_MAX_CHARS),
                action=_clip(action, AUDIT_ACTION_MAX_CHARS),
                target=_clip(target, AUDIT_TARGET_MAX_CHARS),
                detail=_clip(detail, AUDIT_DETAIL_MAX_CHARS))
    session.add(row)
    await session.flush()
    return row


async def list_audit(session: AsyncSession, since: datetime | None = None,
                     limit: int = LIST_MAX) -> list[Audit]:
    """Rows newest first, from ``since`` on, at most ``limit`` (capped at ``LIST_MAX``)."""
    stmt = select(Audit).order_by(Audit.created_at.desc(), Audit.id.desc())
    if since is not None:
        stmt = stmt.where(Audit.created_at >= since)
    return list(await session.scalars(stmt.limit(max(1, min(limit, LIST_MAX)))))

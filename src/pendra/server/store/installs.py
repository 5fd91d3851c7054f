"""Install operations as rows: the durable half of ``pendra.server.installs``.

Rules:
- An install moves ``queued`` → ``running`` → one of ``succeeded``, ``failed``, ``cancelled``;
  ``finished_at`` is set when it reaches an end state, ``updated_at`` on every change.
- Nothing stays active when its runner is gone: ``fail_running_for_worker`` when a worker
  disconnects, ``fail_interrupted`` when the control plane starts.
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

import secrets
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import InvalidRequest, NotFound
from pendra.server.store.tables import INSTALL_ACTIVE_STATES, INSTALL_STATES, Install, utcnow

TERMINAL_STATES = frozenset(INSTALL_STATES) - frozenset(INSTALL_ACTIVE_STATES)
# What update_install may change; the identity of an install (what, where, by whom) is fixed.
UPDATABLE = frozenset({"state", "status_text", "completed", "total", "error", "finished_at"})


def new_install_id() -> str:
    return "op_" + secrets.token_hex(8)


async def create_install(session: AsyncSession, *, catalogue_id: str, variant: str,
                         model_tag: str, backend: str, worker_id: str, requested_by: str = "",
                         op_id: str | None = None) -> Install:
    """A new ``queued`` install."""
    now = utcnow()
    row = Install(id=op_id or new_install_id(), catalogue_id=catalogue_id, variant=variant,
                  model_tag=model_tag, backend=backend, worker_id=worker_id, state="queued",
                  status_text="queued", completed=0, total=0, requested_by=requested_by,
                  created_at=now, updated_at=now)
    session.add(row)
    await session.flush()
    return row


async def get_install(session: AsyncSession, op_id: str) -> Install | None:
    return await session.get(Install, op_id)


async def update_install(session: AsyncSession, op_id: str, **fields: Any) -> Install:
    """Change an install's progress or state; NotFound if there is no such install."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise TypeError(f"update_install cannot set {sorted(unknown)}")
    state = fields.get("state")
    if state is not None and state not in INSTALL_STATES:
        raise InvalidRequest(f"unknown install state {state!r}")
    row = await get_install(session, op_id)
    if row is None:
        raise NotFound(f"install '{op_id}' not found")
    now = utcnow()
    for name, value in fields.items():
        setattr(row, name, value)
    if state in TERMINAL_STATES and row.finished_at is None:
        row.finished_at = now
    row.updated_at = now
    await session.flush()
    return row


async def list_installs(session: AsyncSession, worker_id: str | None = None,
                        active_only: bool = False) -> list[Install]:
    """Installs, newest first, optionally only one worker's or only the queued and running."""
    stmt = select(Install).order_by(Install.created_at.desc(), Install.id)
    if worker_id is not None:
        stmt = stmt.where(Install.worker_id == worker_id)
    if active_only:
        stmt = stmt.where(Install.state.in_(INSTALL_ACTIVE_STATES))
    return list(await session.scalars(stmt))


async def find_active(session: AsyncSession, worker_id: str, model_tag: str) -> Install | None:
    """The queued or running install of ``model_tag`` on ``worker_id``, if there is one."""
    stmt = (select(Install)
            .where(Install.worker_id == worker_id, Install.model_tag == model_tag,
                   Install.state.in_(INSTALL_ACTIVE_STATES))
            .order_by(Install.created_at.desc()).limit(1))
    return await session.scalar(stmt)


async def _fail_active(session: AsyncSession, reason: str, worker_id: str | None) -> int:
    now = utcnow()
    stmt = (update(Install).where(Install.state.in_(INSTALL_ACTIVE_STATES))
            .values(state="failed", status_text="failed", error=reason, updated_at=now,
                    finished_at=now))
    if worker_id is not None:
        stmt = stmt.where(Install.worker_id == worker_id)
    result = cast(CursorResult[Any], await session.execute(stmt))
    return result.rowcount


async def fail_running_for_worker(session: AsyncSession, worker_id: str, reason: str) -> int:
    """Fail every queued or running install on a worker that went away; returns how many."""
    return await _fail_active(session, reason, worker_id)


async def fail_interrupted(session: AsyncSession, reason: str) -> int:
    """Fail every install a previous control-plane process left active; returns how many."""
    return await _fail_active(session, reason, None)

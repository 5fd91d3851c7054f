"""Enrolled GPU workers: who may connect to ``/ws/gpu`` and with which public key.

Rules:
- A worker is enrolled with a unique name and the base64 of its raw 32-byte Ed25519 public key; the
  private half never reaches the store. Removing a worker deletes its row (its usage history keeps
  the id and name).
- Names are shown in the console and sent in ``X-Worker-Name``, so they must be printable.
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import datetime

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import Conflict, InvalidRequest, NotFound
from pendra.server.store.tables import ID_MAX_CHARS, Worker, clean_name, utcnow

PUBLIC_KEY_BYTES = 32  # Ed25519
# Workers may send their key in either base64 alphabet; it is kept exactly as given.
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def new_worker_id() -> str:
    return "wrk-" + secrets.token_hex(4)


def _check_public_key(public_key_b64: str) -> str:
    key = public_key_b64.strip()
    try:
        raw = base64.b64decode(key.translate(_URLSAFE_TO_STANDARD), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("the worker's public key is not valid base64") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise InvalidRequest(f"the worker's public key must be {PUBLIC_KEY_BYTES} bytes "
                             f"(an Ed25519 public key), not {len(raw)}")
    return key


async def enrol_worker(session: AsyncSession, name: str, public_key_b64: str,
                       worker_id: str | None = None) -> Worker:
    """Enrol a worker; Conflict if the name (or the given id) is taken."""
    name = clean_name(name, "worker")
    public_key = _check_public_key(public_key_b64)
    worker_id = worker_id or new_worker_id()
    if len(worker_id) > ID_MAX_CHARS or not worker_id.isprintable():
        raise InvalidRequest(f"invalid worker id {worker_id!r}")
    taken = await session.scalar(
        select(Worker).where(or_(Worker.name == name, Worker.id == worker_id)))
    if taken is not None:
        what = f"name '{name}'" if taken.name == name else f"id '{worker_id}'"
        raise Conflict(f"a worker with {what} is already enrolled")
    row = Worker(id=worker_id, name=name, public_key=public_key, created_at=utcnow())
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:  # enrolled by someone else between the check and the insert
        raise Conflict(f"a worker named '{name}' or with id '{worker_id}' is already enrolled") \
            from exc
    return row


async def get_worker(session: AsyncSession, worker_id: str) -> Worker | None:
    return await session.get(Worker, worker_id)


async def list_workers(session: AsyncSession) -> list[Worker]:
    """Every enrolled worker, by name."""
    return list(await session.scalars(select(Worker).order_by(Worker.name)))


async def remove_worker(session: AsyncSession, worker_id_or_name: str) -> Worker:
    """Delete a worker by id or name and return the row as it was; NotFound if there is none."""
    row = (await session.get(Worker, worker_id_or_name)
           or await session.scalar(select(Worker).where(Worker.name == worker_id_or_name)))
    if row is None:
        raise NotFound(f"no worker '{worker_id_or_name}'")
    await session.delete(row)
    await session.flush()
    return row


async def touch_worker(session: AsyncSession, worker_id: str, when: datetime) -> None:
    """Record that the worker was seen at ``when`` (a no-op if it has been removed)."""
    await session.execute(update(Worker).where(Worker.id == worker_id).values(last_seen_at=when))


async def stamp_last_seen(session: AsyncSession, stamps: dict[str, datetime]) -> None:
    """Move each worker's ``last_seen_at`` forward to its stamp, all in one executemany of one
    UPDATE (never back; removed workers are skipped)."""
    if not stamps:
        return
    table = Worker.__table__
    statement = (update(table).where(table.c.id == bindparam("worker_id"))
                 .where(or_(table.c.last_seen_at.is_(None),
                            table.c.last_seen_at < bindparam("seen_at")))
                 .values(last_seen_at=bindparam("seen_at")))
    await session.execute(statement, [{"worker_id": worker_id, "seen_at": when}
                                      for worker_id, when in sorted(stamps.items())])

"""Enrolling workers: the key pair, the store row, and the command line that starts one.

Rules:
- The key pair is made here, on the control plane, at enrolment; only the public half goes to the
  store (store/workers.py checks it and the name). The private half is returned once, to be shown
  (CLI, console) or kept in the worker's own config (``pendra up``), and never stored here.
- ``ensure_enrolled`` (``pendra up``'s own worker) keeps an enrolment whose public key matches the
  worker's key; otherwise it enrols the key (a new pair when the worker has none) again under the
  same id, named ``"<name> (local)"`` when another worker already has the name.
- ``worker_command`` quotes every value with ``shlex.quote``, so a POSIX shell hands the worker
  exactly these values whatever the name holds (spaces, quotes, ``$``); CLI and console print it.
- ``enrol_recorded`` and ``remove_recorded`` are what the console and the CLI call: the change and
  its audit row in one transaction.
- Functions taking a session flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from pendra.protocol import signing
from pendra.server.store import audit
from pendra.server.store import workers as worker_store
from pendra.server.store.audit import Actor
from pendra.server.store.tables import Worker

LOCAL_WORKER_NAME_SUFFIX = "(local)"


@dataclass(frozen=True)
class Enrolment:
    """An enrolled worker and the private key it proves itself with (shown once)."""

    worker_id: str
    name: str
    private_key: str


async def enrol_worker(session: AsyncSession, name: str, *, worker_id: str | None = None,
                       private_key: str | None = None) -> Enrolment:
    """Enrol a worker under ``name`` with a new key pair (or the one of ``private_key``);
    InvalidRequest or Conflict from the store when the name or id cannot be used."""
    if private_key is None:
        private_key, public_key = signing.generate_keypair()
    else:
        public_key = signing.public_key_of(private_key)
    row = await worker_store.enrol_worker(session, name, public_key, worker_id=worker_id)
    return Enrolment(row.id, row.name, private_key)


async def ensure_enrolled(session: AsyncSession, worker_id: str, name: str,
                          private_key: str | None) -> Enrolment:
    """Make sure worker ``worker_id`` is enrolled with ``private_key``'s public half, or with a
    new key pair when it has none (see the rules); the enrolment as it now stands, with its
    enrolled name and the private key to keep."""
    row = await worker_store.get_worker(session, worker_id)
    if row is not None and private_key is not None \
            and row.public_key == signing.public_key_of(private_key):
        return Enrolment(row.id, row.name, private_key)
    if row is not None:
        await worker_store.remove_worker(session, row.id)
    if any(w.name == name for w in await worker_store.list_workers(session)):
        name = f"{name} {LOCAL_WORKER_NAME_SUFFIX}"
    return await enrol_worker(session, name, worker_id=worker_id, private_key=private_key)


def worker_ws_url(base_url: str) -> str:
    """The WebSocket URL workers dial for a control plane served at ``base_url`` (http[s]://…)."""
    base = base_url.rstrip("/")
    return "ws" + base[len("http"):] if base.startswith("http") else base


def worker_command(enrolment: Enrolment, ws_url: str) -> str:
    """The shell line that starts this worker against the control plane at ``ws_url``."""
    env = {"GPU_WORKER_PRIVATE_KEY": enrolment.private_key, "WORKER_ID": enrolment.worker_id,
           "WORKER_NAME": enrolment.name, "APP_SERVER_WS_URL": ws_url}
    return " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items()) + " pendra worker"


async def enrol_recorded(session: AsyncSession, actor: Actor, name: str) -> Enrolment:
    """``enrol_worker`` with its audit row, in the caller's transaction (owner-only: the caller
    checks the role)."""
    enrolled = await enrol_worker(session, name)
    await audit.record(session, actor, "worker.added", f"{enrolled.name} ({enrolled.worker_id})")
    return enrolled


async def remove_recorded(session: AsyncSession, actor: Actor, worker: str) -> Worker:
    """Remove an enrolled worker (by id or name) with its audit row, in the caller's
    transaction."""
    row = await worker_store.remove_worker(session, worker)
    await audit.record(session, actor, "worker.removed", f"{row.name} ({row.id})")
    return row

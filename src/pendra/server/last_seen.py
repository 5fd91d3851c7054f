"""When each worker was last heard from, written to the store in batches, off the socket loops.

Rules:
- The hub already knows: every frame a worker sends moves its view's ``last_seen``. Nothing on a
  socket loop writes the store. One background task, owned by the app's lifespan
  (``async with LastSeen(store, hub) as last_seen``), every ``interval_s`` takes the connected
  workers whose ``last_seen`` moved since it was last written, plus the final stamps noted when a
  connection ended (``note``: a dict assignment, no I/O), and writes them in one transaction (one
  UPDATE executed for the whole batch, store/workers.py ``stamp_last_seen``).
- So a stored ``last_seen_at`` is at most ``interval_s`` (and one write) behind what the hub saw.
  The console and ``pendra workers list`` show the hub's live value for a connected worker and the
  stored one for the others, whose final stamp is noted as their connection ends.
- A write that fails for a passing reason (``store.retry.transient``) keeps its stamps for the
  next round (a newer stamp for the same worker wins); one that fails for good drops its stamps
  (a connected worker's is collected again next round, since it was never written): last-seen is
  bookkeeping, never worth a connection. Either is logged once until a write succeeds. The writer task never ends because of a write. Pending stamps hold at most one entry
  per worker (``PENDING_MAX`` bounds it anyway).
- On exit the stamps are collected and written one last time, bounded by ``flush_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from types import TracebackType

from pendra.server.hub import Hub
from pendra.server.store import workers as worker_store
from pendra.server.store.db import Store
from pendra.server.store.retry import Backoff, transient
from pendra.server.usage import brief
from pendra.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Stamps are written this often unless told otherwise (the app passes its heartbeat interval): a
# stored stamp is then at most one heartbeat behind, and 1,000 workers cost one transaction every
# 5 s instead of 200 a second.
INTERVAL_S = 5.0
# Workers waiting for a final stamp; far more than any fleet, so only a bug could reach it.
PENDING_MAX = 100_000
# How long shutdown waits for the last stamps to reach the store.
FLUSH_TIMEOUT_S = 5.0
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0


class LastSeen:
    """The stamps not yet stored and the task that writes them."""

    def __init__(self, store: Store, hub: Hub, *, interval_s: float = INTERVAL_S,
                 flush_timeout_s: float = FLUSH_TIMEOUT_S, retry_first_s: float = RETRY_FIRST_S,
                 retry_max_s: float = RETRY_MAX_S) -> None:
        self._store = store
        self._hub = hub
        self._interval_s = interval_s
        self._flush_timeout_s = flush_timeout_s
        self._backoff = Backoff(retry_first_s, retry_max_s)
        self._pending: dict[str, datetime] = {}  # noted, or collected and not yet stored
        self._written: dict[str, datetime] = {}  # the last stamp stored per connected worker
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # the last write failed (so its retries are not logged again)
        self.writes = 0  # transactions that stored stamps (for tests and benchmarks)

    async def __aenter__(self) -> LastSeen:
        self._task = asyncio.create_task(self._run(), name="last-seen-writer")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._task is not None
        await cancel_and_wait(self._task)
        self._collect()
        try:
            async with asyncio.timeout(self._flush_timeout_s):
                while self._pending:
                    if not await self._write_pending():
                        await asyncio.sleep(self._backoff.next_delay())
        except TimeoutError:
            log.warning("shutting down with the last-seen time of %d worker(s) unwritten",
                        len(self._pending))

    def note(self, worker_id: str, when: datetime) -> None:
        """Record that ``worker_id`` was seen at ``when`` (e.g. as its connection ends)."""
        if worker_id not in self._pending and len(self._pending) >= PENDING_MAX:
            return
        if worker_id not in self._pending or self._pending[worker_id] < when:
            self._pending[worker_id] = when

    def _collect(self) -> None:
        """Add every connected worker whose ``last_seen`` moved since it was written."""
        written: dict[str, datetime] = {}
        for view in self._hub.connected():
            stored = self._written.get(view.id)
            if stored is not None:
                written[view.id] = stored
            if stored is None or view.last_seen > stored:
                self.note(view.id, view.last_seen)
        self._written = written  # forget the workers that left

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self._collect()
            while not await self._write_pending():  # a passing failure: again, soon
                await asyncio.sleep(self._backoff.next_delay())

    async def _write_pending(self) -> bool:
        """Write the pending stamps; False when they were kept for a retry."""
        stamps, self._pending = self._pending, {}
        if not stamps:
            return True
        try:
            async with self._store.session() as session:
                await worker_store.stamp_last_seen(session, stamps)
                await session.commit()
        # The writer task's boundary: whatever a write raises, the task goes on.
        except Exception as exc:
            again = transient(exc)
            if not self._failing:
                log.warning("could not record when %d worker(s) were last seen (%s): %s",
                            len(stamps), "retrying until stored" if again else
                            "dropped; connected ones are tried again next round", brief(exc))
            self._failing = True
            if not again:
                return True
            for worker_id, when in stamps.items():  # keep the newer of the two
                self.note(worker_id, when)
            return False
        if self._failing:
            log.info("recorded when %d worker(s) were last seen after retrying", len(stamps))
        self._failing = False
        self._backoff.reset()
        self.writes += 1
        for worker_id, when in stamps.items():
            if self._hub.get(worker_id) is not None:
                self._written[worker_id] = max(when, self._written.get(worker_id, when))
        return True

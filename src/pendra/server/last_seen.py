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
- The pending stamps, their batched write, retries and logging are ``stamps.PendingStamps``'s
  (shared with the last-used writer): a write that fails for a passing reason keeps its stamps for
  the next round; one that fails for good drops them (a connected worker's is collected again next
  round, since it was never written) — last-seen is bookkeeping, never worth a connection. The
  writer task never ends because of a write.
- On exit the stamps are collected and written one last time, bounded by ``flush_timeout_s``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import TracebackType

from pendra.server.hub import Hub
from pendra.server.stamps import RETRY_FIRST_S, RETRY_MAX_S, PendingStamps
from pendra.server.store import workers as worker_store
from pendra.server.store.db import Store
from pendra.tasks import cancel_and_wait

# Stamps are written this often unless told otherwise (the app passes its heartbeat interval): a
# stored stamp is then at most one heartbeat behind, and 1,000 workers cost one transaction every
# 5 s instead of 200 a second.
INTERVAL_S = 5.0
# How long shutdown waits for the last stamps to reach the store.
FLUSH_TIMEOUT_S = 5.0


class LastSeen:
    """The stamps not yet stored and the task that writes them."""

    def __init__(self, store: Store, hub: Hub, *, interval_s: float = INTERVAL_S,
                 flush_timeout_s: float = FLUSH_TIMEOUT_S, retry_first_s: float = RETRY_FIRST_S,
                 retry_max_s: float = RETRY_MAX_S) -> None:
        self._hub = hub
        self._interval_s = interval_s
        self._flush_timeout_s = flush_timeout_s
        self._stamps = PendingStamps(store, worker_store.stamp_last_seen,
                                     "when %d worker(s) were last seen",
                                     retry_first_s=retry_first_s, retry_max_s=retry_max_s)
        self._written: dict[str, datetime] = {}  # the last stamp stored per connected worker
        self._task: asyncio.Task[None] | None = None

    @property
    def _pending(self) -> dict[str, datetime]:
        return self._stamps.pending

    @property
    def writes(self) -> int:
        """Transactions that stored stamps (for tests and benchmarks)."""
        return self._stamps.writes

    async def __aenter__(self) -> LastSeen:
        self._task = asyncio.create_task(self._run(), name="last-seen-writer")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._task is not None
        await cancel_and_wait(self._task)
        self._collect()
        await self._stamps.flush(self._flush_timeout_s)

    def note(self, worker_id: str, when: datetime) -> None:
        """Record that ``worker_id`` was seen at ``when`` (e.g. as its connection ends)."""
        self._stamps.note(worker_id, when)

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
            while (stored := await self._stamps.write()) is None:  # passing failure: again, soon
                await asyncio.sleep(self._stamps.backoff.next_delay())
            for worker_id, when in stored.items():
                if self._hub.get(worker_id) is not None:
                    self._written[worker_id] = max(when, self._written.get(worker_id, when))

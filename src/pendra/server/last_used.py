"""When each API key was last used, recorded off the request path.

Rules:
- Authentication only notes a use (``LastUsed.note(key_id)``: a dict lookup, no I/O); one
  background task, owned by the app's lifespan (``async with LastUsed(store) as last_used``),
  writes the noted stamps in one transaction at most every ``interval_s``. Many uses of a key
  between two writes coalesce into one stamp, the latest; and a key's use is noted at most once
  per ``LAST_USED_RESOLUTION`` (the time it was last noted is kept here, so a busy key costs
  neither a write nor a read per request).
- A write that fails for a passing reason (``store.retry.transient``) is retried with capped
  backoff; the stamps stay pending (a newer one for the same key wins) until they are stored. One
  that fails for good is logged and its stamps dropped: last-used is bookkeeping, never worth a
  request. The pending map holds at most one entry per key (``PENDING_MAX`` bounds it anyway).
- On exit the pending stamps are written one last time, bounded by ``flush_timeout_s``; stamps
  whose write the exit interrupted are among them (a key's use is noted once a minute, so a stamp
  lost here would not come back).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from types import TracebackType

from pendra.server.store import keys
from pendra.server.store.db import Store
from pendra.server.store.retry import Backoff, transient
from pendra.server.store.tables import utcnow
from pendra.server.usage import brief
from pendra.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Last-used is shown to the minute: one stamp a minute per key is all anyone can see.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Stamps are written at most this often: last-used is shown to the minute, so seconds are plenty.
INTERVAL_S = 5.0
# Keys waiting for a stamp; far more keys than anyone makes, so only a bug could reach it.
PENDING_MAX = 100_000
# How long shutdown waits for the last stamps to reach the store.
FLUSH_TIMEOUT_S = 5.0
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0


class LastUsed:
    """Pending ``last_used_at`` stamps and the task that writes them."""

    def __init__(self, store: Store, *, interval_s: float = INTERVAL_S,
                 flush_timeout_s: float = FLUSH_TIMEOUT_S, retry_first_s: float = RETRY_FIRST_S,
                 retry_max_s: float = RETRY_MAX_S) -> None:
        self._store = store
        self._interval_s = interval_s
        self._flush_timeout_s = flush_timeout_s
        self._backoff = Backoff(retry_first_s, retry_max_s)
        self._pending: dict[str, datetime] = {}
        self._noted: dict[str, datetime] = {}  # key id → when its use was last noted
        self._wake = asyncio.Event()  # there are stamps to write
        self._urgent = asyncio.Event()  # someone waits in flush(): skip the coalescing pause
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # the last write failed (so its retries are not logged again)

    async def __aenter__(self) -> "LastUsed":
        self._task = asyncio.create_task(self._run(), name="last-used-writer")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._task is not None
        await cancel_and_wait(self._task)
        try:
            async with asyncio.timeout(self._flush_timeout_s):
                while self._pending:
                    if not await self._write_pending():
                        await asyncio.sleep(self._backoff.next_delay())
        except TimeoutError:
            log.warning("shutting down with the last-used time of %d key(s) unwritten",
                        len(self._pending))

    def note(self, key_id: str) -> None:
        """Record that key ``key_id`` was used now (at most once per ``LAST_USED_RESOLUTION``);
        never blocks or raises."""
        now = utcnow()
        last = self._noted.get(key_id)
        if last is not None and now - last < LAST_USED_RESOLUTION:
            return
        if key_id not in self._pending and len(self._pending) >= PENDING_MAX:
            return
        if len(self._noted) >= PENDING_MAX:
            self._noted.clear()  # only a bug could get here; forgetting costs one write a key
        self._noted[key_id] = now
        self._pending[key_id] = now
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until every stamp noted so far has been written (or given up on)."""
        self._urgent.set()
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._urgent.clear()
            if not await self._write_pending():  # failed for a passing reason: try again soon
                await asyncio.sleep(self._backoff.next_delay())
                self._wake.set()
                continue
            if not self._pending:
                self._idle.set()
            try:  # let uses coalesce, unless someone is waiting for a flush
                await asyncio.wait_for(self._urgent.wait(), self._interval_s)
            except TimeoutError:
                pass

    def _keep(self, stamps: dict[str, datetime]) -> None:
        """Put stamps that were not written back with the pending ones (the newer of two wins)."""
        for key_id, when in stamps.items():
            if key_id not in self._pending or self._pending[key_id] < when:
                self._pending[key_id] = when

    async def _write_pending(self) -> bool:
        """Write the pending stamps; False when they were kept for a retry."""
        stamps, self._pending = self._pending, {}
        if not stamps:
            return True
        try:
            async with self._store.session() as session:
                await keys.stamp_last_used(session, stamps)
                await session.commit()
        except asyncio.CancelledError:  # stopped mid-write (shutdown): the exit flush has them
            self._keep(stamps)
            raise
        # The writer task's boundary: whatever a write raises, the task goes on.
        except Exception as exc:
            if not transient(exc):
                log.error("dropped the last-used time of %d key(s): %s", len(stamps), brief(exc))
                return True
            self._keep(stamps)
            if not self._failing:
                log.warning("could not record when %d key(s) were last used, retrying until "
                            "stored: %s", len(stamps), brief(exc))
            self._failing = True
            return False
        if self._failing:
            log.info("recorded when %d key(s) were last used after retrying", len(stamps))
        self._failing = False
        self._backoff.reset()
        return True

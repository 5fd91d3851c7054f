"""When each API key was last used, recorded off the request path.

Rules:
- Authentication only notes a use (``LastUsed.note(key_id)``: a dict lookup, no I/O); one
  background task, owned by the app's lifespan (``async with LastUsed(store) as last_used``),
  writes the noted stamps in one transaction at most every ``interval_s``. Many uses of a key
  between two writes coalesce into one stamp, the latest; and a key's use is noted at most once
  per ``LAST_USED_RESOLUTION`` (the time it was last noted is kept here, so a busy key costs
  neither a write nor a read per request).
- The pending stamps, their batched write, retries and logging are ``stamps.PendingStamps``'s
  (shared with the last-seen writer): a write that fails for a passing reason is retried with
  capped backoff until stored; one that fails for good is logged and dropped — last-used is
  bookkeeping, never worth a request.
- On exit the pending stamps are written one last time, bounded by ``flush_timeout_s``; stamps
  whose write the exit interrupted are among them (a key's use is noted once a minute, so a stamp
  lost here would not come back).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from types import TracebackType

from pendra.server.stamps import PENDING_MAX, RETRY_FIRST_S, RETRY_MAX_S, PendingStamps
from pendra.server.store import keys
from pendra.server.store.db import Store
from pendra.server.store.tables import utcnow
from pendra.tasks import cancel_and_wait

# Last-used is shown to the minute: one stamp a minute per key is all anyone can see.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Stamps are written at most this often: last-used is shown to the minute, so seconds are plenty.
INTERVAL_S = 5.0
# How long shutdown waits for the last stamps to reach the store.
FLUSH_TIMEOUT_S = 5.0


class LastUsed:
    """Pending ``last_used_at`` stamps and the task that writes them."""

    def __init__(self, store: Store, *, interval_s: float = INTERVAL_S,
                 flush_timeout_s: float = FLUSH_TIMEOUT_S, retry_first_s: float = RETRY_FIRST_S,
                 retry_max_s: float = RETRY_MAX_S) -> None:
        self._interval_s = interval_s
        self._flush_timeout_s = flush_timeout_s
        self._stamps = PendingStamps(store, keys.stamp_last_used, "when %d key(s) were last used",
                                     retry_first_s=retry_first_s, retry_max_s=retry_max_s)
        self._noted: dict[str, datetime] = {}  # key id → when its use was last noted
        self._wake = asyncio.Event()  # there are stamps to write
        self._urgent = asyncio.Event()  # someone waits in flush(): skip the coalescing pause
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def _pending(self) -> dict[str, datetime]:
        return self._stamps.pending

    async def __aenter__(self) -> "LastUsed":
        self._task = asyncio.create_task(self._run(), name="last-used-writer")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._task is not None
        await cancel_and_wait(self._task)
        await self._stamps.flush(self._flush_timeout_s)

    def note(self, key_id: str) -> None:
        """Record that key ``key_id`` was used now (at most once per ``LAST_USED_RESOLUTION``);
        never blocks or raises."""
        now = utcnow()
        last = self._noted.get(key_id)
        if last is not None and now - last < LAST_USED_RESOLUTION:
            return
        if len(self._noted) >= PENDING_MAX:
            self._noted.clear()  # only a bug could get here; forgetting costs one write a key
        self._noted[key_id] = now
        self._stamps.note(key_id, now)
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
            if await self._stamps.write() is None:  # failed for a passing reason: try again soon
                await asyncio.sleep(self._stamps.backoff.next_delay())
                self._wake.set()
                continue
            if not self._stamps.pending:
                self._idle.set()
            try:  # let uses coalesce, unless someone is waiting for a flush
                await asyncio.wait_for(self._urgent.wait(), self._interval_s)
            except TimeoutError:
                pass

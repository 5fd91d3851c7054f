"""Timestamps waiting to be written in one batch: the part the last-used and last-seen writers
share.

Rules:
- ``note(id, when)`` keeps one pending stamp per id, the newer of two; at most ``PENDING_MAX`` ids
  (a bound only a bug could reach: a new id past it is not noted).
- ``write()`` stores every pending stamp in one transaction with the given ``stamp`` function.
  A failure for a passing reason (``store.retry.transient``) puts the stamps back (a newer one noted
  meanwhile wins) and answers False, so the caller backs off and tries again; any other failure
  drops them (stamps are bookkeeping, never worth a request or a connection). The first failure of
  a streak is logged, and the recovery. A write cancelled half-way (shutdown) puts its stamps back
  for the exit flush.
- ``flush(timeout_s)`` writes until nothing is pending or the time is up (then says how many were
  left unwritten).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from pendra.server.store.db import Store
from pendra.server.store.retry import Backoff, brief, transient

log = logging.getLogger(__name__)

# Ids waiting for a stamp: far more keys or workers than anyone has, so only a bug could reach it.
PENDING_MAX = 100_000
# Retry delays for a write the store refused for a passing reason.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0

Stamp = Callable[[AsyncSession, dict[str, datetime]], Awaitable[None]]


class PendingStamps:
    """Stamps noted and not yet stored, and how to store them (``what`` names them in logs, e.g.
    "when %d key(s) were last used")."""

    def __init__(self, store: Store, stamp: Stamp, what: str, *,
                 retry_first_s: float = RETRY_FIRST_S, retry_max_s: float = RETRY_MAX_S) -> None:
        self._store = store
        self._stamp = stamp
        self._what = what
        self.backoff = Backoff(retry_first_s, retry_max_s)
        self.pending: dict[str, datetime] = {}
        self._failing = False  # the last write failed (so its retries are not logged again)
        self.writes = 0  # transactions that stored stamps (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self.pending)

    def note(self, key: str, when: datetime) -> None:
        """Keep ``when`` for ``key`` unless a newer stamp is pending; never blocks or raises."""
        current = self.pending.get(key)
        if current is None and len(self.pending) >= PENDING_MAX:
            return
        if current is None or current < when:
            self.pending[key] = when

    async def write(self) -> dict[str, datetime] | None:
        """Store what is pending; the stamps stored, or None when they were kept for a retry."""
        stamps, self.pending = self.pending, {}
        if not stamps:
            return stamps
        try:
            async with self._store.session() as session:
                await self._stamp(session, stamps)
                await session.commit()
        except asyncio.CancelledError:  # stopped mid-write (shutdown): the exit flush has them
            self._put_back(stamps)
            raise
        # The writer task's boundary: whatever a write raises, the task goes on.
        except Exception as exc:
            again = transient(exc)
            if not self._failing:
                log.warning("could not record %s (%s): %s", self._what % len(stamps),
                            "retrying until stored" if again else "dropped", brief(exc))
            self._failing = True
            if not again:
                return {}
            self._put_back(stamps)
            return None
        if self._failing:
            log.info("recorded %s after retrying", self._what % len(stamps))
        self._failing = False
        self.backoff.reset()
        self.writes += 1
        return stamps

    async def flush(self, timeout_s: float) -> None:
        """Write until nothing is pending, for at most ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.pending:
                    if await self.write() is None:
                        await asyncio.sleep(self.backoff.next_delay())
        except TimeoutError:
            log.warning("shutting down with %s unwritten", self._what % len(self.pending))

    def _put_back(self, stamps: dict[str, datetime]) -> None:
        for key, when in stamps.items():
            self.note(key, when)

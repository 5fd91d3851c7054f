"""Usage rows written off the request path.

Rules:
- ``UsageWriter`` is owned by the app's lifespan (``async with UsageWriter(store) as usage``): one
  background task drains a bounded queue into the store in batches. ``submit`` never blocks and
  never raises; when the queue is full the record is dropped with a warning, because a slow
  database must not slow or fail the API. On exit the queue is flushed (bounded by
  ``FLUSH_TIMEOUT_S``), then the task stops.
- A batch is one transaction and one INSERT statement (an executemany). It gathers records for
  ``BATCH_WINDOW_S`` after its first one, or until it holds ``BATCH_RECORDS``, or until someone
  waits in ``flush`` (or shutdown): under load the store sees one commit per ~100 ms instead of
  one per request (a commit per row costs ~30 times the CPU of a row in a batch of 200).
- An exception that escapes the writer's own handling (a bug) does not lose the batch in hand:
  it is logged with its traceback, and the writer restarts after a capped backoff and writes
  that batch again before taking new records; ``crashes`` counts it. Records still queued at the
  shutdown deadline are counted in an error, never dropped silently.
- A batch that fails for a passing reason (``store.retry.transient``: a locked database, a lost
  connection) is retried with capped backoff until it is stored, so a database locked for seconds
  loses nothing; meanwhile new records wait in the queue. A batch that fails for any other reason
  is written again one record at a time, so only the record that cannot be stored (say, a token
  count no column holds) is dropped; it is logged and counted in ``rejected``. The writer task
  never ends because of a record.
- A record holds counts, timings, names and statuses, never prompt or completion content;
  ``UsageMeter`` is how a request builds one as it goes.
- ``submit`` is where every relayed request ends, so it also hands the record to ``observe``
  (the app's metrics, server/metrics.py) before queueing it: a record dropped for a full queue is
  still counted there. ``backlog`` (queued plus in hand) is read by the metrics at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from pendra.server.store.db import Store
from pendra.server.store.retry import Backoff, brief, transient
from pendra.server.store.usage import UsageRecord, record_usages
from pendra.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Records waiting to be written; at ~1 KB each this bounds the writer's memory to ~10 MB.
QUEUE_RECORDS = 10_000
# Records per transaction: one commit per batch keeps SQLite's write lock short.
BATCH_RECORDS = 200
# How long a batch waits for more records after its first: ~10 commits a second at most under
# load, and a usage row in the store well within a second of its request.
BATCH_WINDOW_S = 0.1
# How long shutdown waits for queued records to reach the store before giving up on them.
FLUSH_TIMEOUT_S = 10.0
# Retry delays for a batch the store refused for a passing reason: quick at first, and capped so a
# released lock is noticed within a couple of seconds.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0
# Request ids in log lines are clipped to this (they may come from the client).
REQUEST_ID_LOG_CHARS = 100
# A client that went away before the response ended (nginx's convention).
CLIENT_CLOSED = 499


@dataclass
class UsageMeter:
    """What one request learns on its way: filled in by the relay, turned into one record."""

    request_id: str
    kind: str
    model_requested: str
    key_id: str | None
    stream: bool = False
    started: float = field(default_factory=time.monotonic)
    model_served: str | None = None
    worker_id: str | None = None
    worker_name: str | None = None
    status: int = 200
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_ms: int | None = None

    def answered(self) -> None:
        """The worker's first frame has arrived (time to first token, for a streamed request)."""
        if self.stream:
            self.first_token_ms = int((time.monotonic() - self.started) * 1000)

    def worker(self, worker_id: str, worker_name: str) -> None:
        self.worker_id, self.worker_name = worker_id, worker_name

    def failed(self, status: int, message: str) -> None:
        self.status, self.error = status, message

    def tokens(self, usage: dict[str, int]) -> None:
        self.prompt_tokens = int(usage.get("prompt_tokens", 0) or 0)
        self.completion_tokens = int(usage.get("completion_tokens", 0) or 0)

    def record(self) -> UsageRecord:
        return UsageRecord(
            request_id=self.request_id, kind=self.kind, model_requested=self.model_requested,
            status=self.status, latency_ms=int((time.monotonic() - self.started) * 1000),
            key_id=self.key_id, model_served=self.model_served, worker_id=self.worker_id,
            worker_name=self.worker_name, prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens, stream=self.stream, error=self.error,
            first_token_ms=self.first_token_ms)


class RecordRefused(Exception):
    """The store refused a write for a reason that will not pass by retrying (cause attached)."""


class UsageWriter:
    """A bounded queue of usage records and the one task that writes them."""

    def __init__(self, store: Store, *, queue_records: int = QUEUE_RECORDS,
                 batch_window_s: float = BATCH_WINDOW_S,
                 flush_timeout_s: float = FLUSH_TIMEOUT_S, retry_first_s: float = RETRY_FIRST_S,
                 retry_max_s: float = RETRY_MAX_S,
                 observe: Callable[[UsageRecord], None] | None = None) -> None:
        self._store = store
        self._observe = observe
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue(maxsize=queue_records)
        self._task: asyncio.Task[None] | None = None
        self._batch_window_s = batch_window_s
        self._flush_timeout_s = flush_timeout_s
        self._retry_first_s, self._retry_max_s = retry_first_s, retry_max_s
        self._batch: list[UsageRecord] = []  # taken from the queue, not yet stored
        self._hurry = asyncio.Event()  # end the batch's gathering window now
        self._flushing = 0  # callers waiting in flush() or shutdown: no gathering window
        self.dropped = 0  # records never queued: the queue was full
        self.rejected = 0  # records the store refused for good (logged one by one)
        self.retries = 0  # failed attempts at a write that were then tried again
        self.batches = 0  # transactions that stored records
        self.crashes = 0  # unexpected exceptions that restarted the writer (logged)

    async def __aenter__(self) -> "UsageWriter":
        self._task = asyncio.create_task(self._run(), name="usage-writer")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await asyncio.wait_for(self.flush(), self._flush_timeout_s)
        except TimeoutError:
            log.error("shutting down with %d usage record(s) unwritten after %.0f s",
                      self._queue.qsize() + len(self._batch), self._flush_timeout_s)
        finally:
            assert self._task is not None
            await cancel_and_wait(self._task)

    def submit(self, record: UsageRecord) -> None:
        """Queue a record; never blocks, never raises."""
        if self._observe is not None:
            self._observe(record)
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("usage queue full (%d records); dropped the record of request %s",
                        self._queue.maxsize, record.request_id[:REQUEST_ID_LOG_CHARS])
            return
        if self._queue.qsize() >= BATCH_RECORDS:
            self._hurry.set()

    @property
    def backlog(self) -> int:
        """Records queued or in hand, not yet stored."""
        return self._queue.qsize() + len(self._batch)

    async def flush(self) -> None:
        """Wait until everything queued so far has been written (or given up on)."""
        self._flushing += 1
        self._hurry.set()
        try:
            await self._queue.join()
        finally:
            self._flushing -= 1

    async def _run(self) -> None:
        backoff = Backoff(self._retry_first_s, self._retry_max_s)
        while True:
            try:
                await self._drain()
            # The writer task's boundary: a bug must not end the task with records in hand.
            except Exception:
                self.crashes += 1
                log.exception("the usage writer failed unexpectedly with %d record(s) in hand "
                              "(%d queued); restarting it, they will be written",
                              len(self._batch), self._queue.qsize())
                await asyncio.sleep(backoff.next_delay())

    async def _drain(self) -> None:
        while True:
            if not self._batch:
                self._batch = await self._take_batch()
            await self._store_batch(self._batch)
            done, self._batch = len(self._batch), []
            for _ in range(done):
                self._queue.task_done()

    async def _take_batch(self) -> list[UsageRecord]:
        batch = [await self._queue.get()]
        if self._queue.qsize() + 1 < BATCH_RECORDS and not self._flushing:
            self._hurry.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), self._batch_window_s)
        while len(batch) < BATCH_RECORDS and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _store_batch(self, batch: list[UsageRecord]) -> None:
        try:
            await self._until_stored(batch)
            return
        except RecordRefused as exc:
            if len(batch) == 1:
                self._refused(batch[0], exc)
                return
            log.warning("the store refused a batch of %d usage records (%s); writing them one "
                        "by one", len(batch), exc)
        for record in batch:
            try:
                await self._until_stored([record])
            except RecordRefused as exc:
                self._refused(record, exc)

    def _refused(self, record: UsageRecord, exc: RecordRefused) -> None:
        self.rejected += 1
        log.error("dropped the usage record of request %s: the store refused it: %s "
                  "(%d refused so far)", record.request_id[:REQUEST_ID_LOG_CHARS],
                  exc, self.rejected)

    async def _until_stored(self, records: list[UsageRecord]) -> None:
        """Write ``records`` in one transaction, retrying passing failures until it commits;
        RecordRefused when the failure is not one that passes."""
        backoff = Backoff(self._retry_first_s, self._retry_max_s)
        failures = 0
        while True:
            try:
                await self._write(records)
            # The writer task's boundary: a driver may raise anything for a bad value (sqlite3
            # raises OverflowError), and no record may end the task.
            except Exception as exc:
                if not transient(exc):
                    raise RecordRefused(brief(exc)) from exc
                failures += 1
                self.retries += 1
                if failures == 1:
                    log.warning("could not store %d usage record(s), retrying until stored: %s",
                                len(records), brief(exc))
                await asyncio.sleep(backoff.next_delay())
            else:
                if failures:
                    log.info("stored %d usage record(s) after %d failed attempt(s)",
                             len(records), failures)
                return

    async def _write(self, records: list[UsageRecord]) -> None:
        async with self._store.session() as session:
            await record_usages(session, records)
            await session.commit()
        self.batches += 1

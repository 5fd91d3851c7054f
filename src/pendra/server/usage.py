"""Usage rows written off the request path.

Rules:
- ``UsageWriter`` is owned by the app's lifespan (``async with UsageWriter(store) as usage``): one
  background task drains a bounded queue into the store in batches. ``submit`` never blocks and
  never raises; when the queue is full the record is dropped with a warning, because a slow
  database must not slow or fail the API. On exit the queue is flushed (bounded by
  ``FLUSH_TIMEOUT_S``), then the task stops.
- A record holds counts, timings, names and statuses, never prompt or completion content;
  ``UsageMeter`` is how a request builds one as it goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from types import TracebackType

from sqlalchemy.exc import SQLAlchemyError

from pendra.errors import PendraError
from pendra.server.store.db import Store
from pendra.server.store.usage import UsageRecord, record_usage

log = logging.getLogger(__name__)

# Records waiting to be written; at ~1 KB each this bounds the writer's memory to ~10 MB.
QUEUE_RECORDS = 10_000
# Records per transaction: one commit per batch keeps SQLite's write lock short.
BATCH_RECORDS = 200
# How long shutdown waits for queued records to reach the store before giving up on them.
FLUSH_TIMEOUT_S = 10.0
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
            completion_tokens=self.completion_tokens, stream=self.stream, error=self.error)


class UsageWriter:
    """A bounded queue of usage records and the one task that writes them."""

    def __init__(self, store: Store, *, queue_records: int = QUEUE_RECORDS) -> None:
        self._store = store
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue(maxsize=queue_records)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    async def __aenter__(self) -> "UsageWriter":
        self._task = asyncio.create_task(self._run(), name="usage-writer")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await asyncio.wait_for(self._queue.join(), FLUSH_TIMEOUT_S)
        except TimeoutError:
            log.warning("shutting down with %d usage record(s) unwritten", self._queue.qsize())
        finally:
            assert self._task is not None
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                # Ours, from the cancel above; if our own caller is being cancelled too, say so.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    def submit(self, record: UsageRecord) -> None:
        """Queue a record; never blocks, never raises."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("usage queue full (%d records); dropped the record of request %s",
                        self._queue.maxsize, record.request_id)

    async def flush(self) -> None:
        """Wait until everything queued so far has been written (or given up on)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_RECORDS and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[UsageRecord]) -> None:
        try:
            async with self._store.session() as session:
                for record in batch:
                    await record_usage(session, record)
                await session.commit()
        except (SQLAlchemyError, OSError, PendraError) as exc:
            # The writer outlives a bad batch: losing rows beats losing the writer.
            log.error("could not write %d usage record(s): %s", len(batch), exc)

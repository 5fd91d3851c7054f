"""The usage writer: batches under load, survives bad records, passing failures and its own
crash, flushes on exit; the retry rules it follows."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from store_targets import pg_schema, store, target  # noqa: F401  (fixtures)

from api_fixtures import TIMEOUT_S, FakeWorker, fleet, running_api
from pendra.server.store.db import Store
from pendra.server.store.retry import Backoff, transient
from pendra.server.store.tables import Usage
from pendra.server.store.usage import UsageRecord
from pendra.server.usage import UsageWriter


def record(request_id: str, prompt_tokens: int = 1) -> UsageRecord:
    return UsageRecord(request_id=request_id, kind="chat", model_requested="m", status=200,
                       latency_ms=5, prompt_tokens=prompt_tokens)


async def stored_ids(store: Store) -> list[str]:
    async with store.session() as session:
        return list(await session.scalars(select(Usage.request_id).order_by(Usage.id)))


async def test_a_record_no_column_holds_is_dropped_alone_and_the_writer_goes_on(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """A record with prompt_tokens = 10**30 in a batch costs only itself: the rest of its batch is
    stored, it is logged and counted, and records submitted afterwards are still written."""
    async with UsageWriter(store) as writer:
        for rec in (record("req_good_1"), record("req_huge", 10**30), record("req_good_2")):
            writer.submit(rec)
        await writer.flush()
        assert writer.rejected == 1
        writer.submit(record("req_later"))
        await writer.flush()
    assert await stored_ids(store) == ["req_good_1", "req_good_2", "req_later"]
    refused = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refused) == 1 and "req_huge" in refused[0].getMessage()


def _dbapi(cls: type[DataError] | type[IntegrityError] | type[OperationalError],
           orig: Exception) -> Exception:
    return cls("INSERT …", {}, orig)


def test_transient_separates_passing_failures_from_bad_data() -> None:
    """Locks and lost connections are retried; values the column refuses and bugs are not."""
    assert transient(_dbapi(OperationalError, Exception("database is locked")))
    assert transient(ConnectionResetError())
    assert not transient(_dbapi(DataError, Exception("value out of int32 range")))
    assert not transient(_dbapi(IntegrityError, Exception("duplicate key")))
    assert not transient(OverflowError("Python int too large to convert to SQLite INTEGER"))


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    """Delays double (less up to 25% jitter) until the cap, and start over after a reset."""
    backoff = Backoff(0.1, 0.4)
    delays = [backoff.next_delay() for _ in range(4)]
    for delay, ceiling in zip(delays, [0.1, 0.2, 0.4, 0.4]):
        assert ceiling * 0.75 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.1


async def test_queued_records_are_written_on_shutdown(store: Store) -> None:
    """Records still gathering for a batch (a window of a minute) when the writer exits are all
    stored by the exit, in one transaction."""
    async with UsageWriter(store, batch_window_s=60) as writer:
        for n in range(50):
            writer.submit(record(f"req_{n}"))
        await asyncio.sleep(0.05)  # the writer has taken the first record and is gathering
    assert await stored_ids(store) == [f"req_{n}" for n in range(50)]
    assert writer.batches == 1


async def test_a_crash_of_the_writer_is_logged_and_loses_no_record(
        store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception escaping the writer's loop (a bug, injected here into its first
    batch) is logged with its traceback; the writer restarts and stores that batch and every
    record after it."""
    async with UsageWriter(store, batch_window_s=0.01, retry_first_s=0.01) as writer:
        store_batch = writer._store_batch
        calls = 0

        async def crashing_once(batch: list[UsageRecord]) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug in the writer")
            await store_batch(batch)

        monkeypatch.setattr(writer, "_store_batch", crashing_once)
        for n in range(3):
            writer.submit(record(f"req_{n}"))
        async with asyncio.timeout(TIMEOUT_S):
            await writer.flush()
        writer.submit(record("req_later"))
    assert await stored_ids(store) == ["req_0", "req_1", "req_2", "req_later"]
    assert writer.crashes == 1
    crash = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crash) == 1 and crash[0].exc_info and "restarting" in crash[0].getMessage()


async def test_every_request_under_concurrent_load_leaves_exactly_one_usage_row(
        tmp_path: Path) -> None:
    """200 chat requests, 32 at a time, through a real server and worker: exactly one usage row
    per request (their X-Request-Ids, each once), written in far fewer transactions than rows."""
    async with running_api(tmp_path) as api, fleet(api, FakeWorker("alpha", max_concurrent=32)):
        gate = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S,
                                     headers=api.headers) as client:
            async def one(n: int) -> str:
                async with gate:
                    response = await client.post("/api/v1/chat/completions", json={
                        "model": "llama3.2", "messages": [{"role": "user", "content": f"{n}"}]})
                    assert response.status_code == 200, response.text
                    return response.headers["x-request-id"]

            request_ids = await asyncio.gather(*(one(n) for n in range(200)))
        writer = api.app.state.usage
        await writer.flush()
        stored = await stored_ids(api.app.state.store)
        assert sorted(stored) == sorted(request_ids) and len(set(stored)) == 200
        assert writer.batches < 100, f"{writer.batches} transactions for 200 rows"

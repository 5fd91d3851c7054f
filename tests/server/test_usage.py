"""The usage writer survives bad records and passing failures; the retry rules it follows."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from store_targets import pg_schema, store, target  # noqa: F401  (fixtures)

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

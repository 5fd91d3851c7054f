"""Usage records and their summaries, with no request content anywhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, inspect

from pendra.errors import InvalidRequest
from pendra.server.store import keys, usage
from pendra.server.store.db import Store
from pendra.server.store.tables import ApiKey, utcnow
from pendra.server.store.usage import UsageRecord

COLUMNS = {"id", "created_at", "request_id", "key_id", "kind", "model_requested", "model_served",
           "worker_id", "worker_name", "status", "prompt_tokens", "completion_tokens",
           "latency_ms", "stream", "error"}
# Fields of a record the metrics read and the store does not keep (server/metrics.py).
NOT_STORED = {"first_token_ms"}


def _rec(n: int, **fields: object) -> UsageRecord:
    base: dict[str, object] = {"request_id": f"req-{n}", "kind": "chat", "model_requested": "llama",
                               "model_served": "llama3:8b", "status": 200, "latency_ms": 100}
    return UsageRecord(**(base | fields))  # type: ignore[arg-type]


async def test_table_has_no_content_columns(store: Store) -> None:
    """The usage table holds counts, names, timings and status only: no prompt or completion."""
    async with store.engine.connect() as connection:
        columns = await connection.run_sync(
            lambda sync: {c["name"] for c in inspect(sync).get_columns("usage")})
    assert columns == COLUMNS
    assert set(UsageRecord.__dataclass_fields__) - NOT_STORED == COLUMNS - {"id"}


async def test_record_and_recent(store: Store) -> None:
    """Records come back newest first, limited, with every field as recorded."""
    now = utcnow()
    async with store.session() as session:
        key, _ = await keys.create_key(session, "k")
        for n in range(5):
            await usage.record_usage(session, _rec(
                n, created_at=now - timedelta(seconds=10 - n), key_id=key.id, worker_id="wrk-1",
                worker_name="gpu-1", prompt_tokens=n, completion_tokens=2 * n, stream=n % 2 == 1))
        await session.commit()
    async with store.session() as session:
        recent = await usage.recent_usage(session, limit=3)
    assert [r.request_id for r in recent] == ["req-4", "req-3", "req-2"]
    top = recent[0]
    assert (top.key_id, top.kind, top.model_requested, top.model_served) == \
        (key.id, "chat", "llama", "llama3:8b")
    assert (top.worker_id, top.worker_name, top.status, top.latency_ms) == \
        ("wrk-1", "gpu-1", 200, 100)
    assert (top.prompt_tokens, top.completion_tokens, top.stream, top.error) == (4, 8, False, None)
    assert top.created_at == now - timedelta(seconds=6)


async def test_record_clips_client_strings_and_refuses_unknown_kinds(store: Store) -> None:
    """Over-long model names and errors are clipped to their columns; an unknown kind is refused."""
    async with store.session() as session:
        row = await usage.record_usage(session, _rec(1, model_requested="m" * 5000, status=404,
                                                     model_served=None, error="e" * 5000))
        await session.commit()
        assert len(row.model_requested) == 200 and len(row.error or "") == 500
        with pytest.raises(InvalidRequest, match="kind"):
            await usage.record_usage(session, _rec(2, kind="video"))
        with pytest.raises(InvalidRequest, match="limit"):
            await usage.recent_usage(session, limit=0)


async def test_summary_totals_and_breakdowns(store: Store) -> None:
    """Totals count requests, errors (status >= 400) by class, tokens and the latency of served
    requests (nearest-rank percentiles, mean); breakdowns per model served, per key name, per
    worker name and per kind (the API a request came in by, with its readable label), busiest
    first."""
    now = utcnow()
    async with store.session() as session:
        alice, _ = await keys.create_key(session, "alice")
        bob, _ = await keys.create_key(session, "bob")
        records = [
            _rec(1, key_id=alice.id, worker_name="gpu-1", worker_id="w1", latency_ms=10,
                 prompt_tokens=5, completion_tokens=7),
            _rec(2, key_id=alice.id, worker_name="gpu-1", worker_id="w1", latency_ms=30,
                 prompt_tokens=1, completion_tokens=1),
            _rec(3, key_id=alice.id, worker_name="gpu-2", worker_id="w2", latency_ms=20,
                 model_served="nomic", kind="embed", prompt_tokens=4),
            _rec(4, key_id=bob.id, worker_name="gpu-2", worker_id="w2", latency_ms=1000,
                 status=502, error="worker died"),
            _rec(5, key_id=None, model_served=None, status=404, latency_ms=1,
                 model_requested="nope", kind="completions"),
            # Outside the window asked for below.
            _rec(6, key_id=bob.id, worker_name="gpu-1", latency_ms=5,
                 created_at=now - timedelta(days=2)),
        ]
        for rec in records:
            await usage.record_usage(session, rec)
        await session.commit()

    async with store.session() as session:
        summary = await usage.usage_summary(session, now - timedelta(days=1))
        everything = await usage.usage_summary(session, None)

    assert summary["since"] == (now - timedelta(days=1)).isoformat() and summary["until"] is None
    assert summary["totals"] == {"requests": 5, "served": 3, "errors": 2, "client_errors": 1,
                                 "client_closed": 0, "server_errors": 1, "prompt_tokens": 10,
                                 "completion_tokens": 8, "latency_p50_ms": 20,
                                 "latency_p95_ms": 30, "latency_p99_ms": 30,
                                 "latency_avg_ms": 20.0}
    assert summary["failures"] == [{"status": 404, "class": "client_errors", "requests": 1},
                                   {"status": 502, "class": "server_errors", "requests": 1}]
    by_model = {row["model"]: row for row in summary["per_model"]}
    assert [row["model"] for row in summary["per_model"]][0] == "llama3:8b"
    assert by_model["llama3:8b"] == {"model": "llama3:8b", "requests": 3, "served": 2,
                                     "errors": 1, "client_errors": 0, "client_closed": 0,
                                     "server_errors": 1, "prompt_tokens": 6,
                                     "completion_tokens": 8, "latency_avg_ms": 20.0}
    assert by_model["nomic"]["requests"] == 1 and by_model[None]["errors"] == 1
    by_key = {row["key"]: row for row in summary["per_key"]}
    assert summary["per_key"][0]["key"] == "alice"
    assert (by_key["alice"]["key_id"], by_key["alice"]["requests"]) == (alice.id, 3)
    assert (by_key["bob"]["requests"], by_key["bob"]["errors"]) == (1, 1)
    assert by_key[None]["key_id"] is None and by_key[None]["requests"] == 1
    by_worker = {row["worker"]: row["requests"] for row in summary["per_worker"]}
    assert by_worker == {"gpu-1": 2, "gpu-2": 2, None: 1}
    by_kind = {row["kind"]: (row["label"], row["requests"]) for row in summary["per_kind"]}
    assert by_kind == {"chat": ("Chat completions", 3), "embed": ("Embeddings", 1),
                       "completions": ("Completions", 1)}
    assert everything["since"] is None
    assert everything["totals"]["requests"] == 6
    async with store.session() as session:
        before = await usage.usage_summary(session, None, now - timedelta(days=1))
    assert before["totals"]["requests"] == 1 and before["until"] is not None
    assert {r["worker"]: r["requests"] for r in everything["per_worker"]}["gpu-1"] == 3


async def test_summary_of_nothing(store: Store) -> None:
    """With no records the totals are zeros, latencies are None and breakdowns are empty."""
    async with store.session() as session:
        summary = await usage.usage_summary(session, None)
    assert summary["totals"] == {"requests": 0, "served": 0, "errors": 0, "client_errors": 0,
                                 "client_closed": 0, "server_errors": 0, "prompt_tokens": 0,
                                 "completion_tokens": 0, "latency_p50_ms": None,
                                 "latency_p95_ms": None, "latency_p99_ms": None,
                                 "latency_avg_ms": None}
    assert summary["failures"] == []
    assert summary["per_model"] == summary["per_key"] == summary["per_worker"] == []
    assert summary["per_kind"] == []


async def test_latency_leaves_out_failures_which_are_counted_by_class(store: Store) -> None:
    """Most requests failing fast (404s, 499s, 503s in 0–1 ms) do not drag the percentiles down:
    p50/p95/p99 and the mean are the served requests' alone, and the failures are counted by
    class (client 4xx, client closed 499, server 5xx)."""
    async with store.session() as session:
        for n, status in enumerate([404] * 5 + [499] * 2 + [503] * 4):
            await usage.record_usage(session, _rec(n, status=status, latency_ms=0))
        for n, latency in enumerate([400, 100, 300, 200], start=100):
            await usage.record_usage(session, _rec(n, latency_ms=latency))
        await session.commit()
        totals = (await usage.usage_summary(session, None))["totals"]
        failures = await usage.failures_by_status(session, None)
    assert (totals["requests"], totals["served"], totals["errors"]) == (15, 4, 11)
    assert (totals["client_errors"], totals["client_closed"], totals["server_errors"]) == (5, 2, 4)
    assert (totals["latency_p50_ms"], totals["latency_p95_ms"], totals["latency_p99_ms"]) == \
        (200, 400, 400)
    assert totals["latency_avg_ms"] == 250.0
    assert failures == [{"status": 404, "class": "client_errors", "requests": 5},
                        {"status": 503, "class": "server_errors", "requests": 4},
                        {"status": 499, "class": "client_closed", "requests": 2}]


def test_nearest_rank() -> None:
    """Nearest-rank percentiles: the value at rank ceil(p/100 × n), 0-based here."""
    assert [usage.nearest_rank(50, n) for n in (1, 2, 3, 4, 10)] == [0, 0, 1, 1, 4]
    assert [usage.nearest_rank(99, n) for n in (1, 10, 100, 1000)] == [0, 9, 98, 989]


async def test_export_pages_through_a_period_in_order(store: Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An export yields exactly the records of [since, until), oldest first, in bounded batches
    (the batch size shrunk here so paging is exercised); an empty or reversed period is refused."""
    monkeypatch.setattr(usage, "EXPORT_BATCH", 3)
    now = utcnow()
    async with store.session() as session:
        for n in range(10):
            await usage.record_usage(session, _rec(n, created_at=now - timedelta(hours=10 - n)))
        await session.commit()
        batches = [b async for b in usage.export_rows(session, now - timedelta(hours=8, minutes=1),
                                                        now - timedelta(hours=1, minutes=1))]
        assert [len(b) for b in batches] == [3, 3, 1]
        assert [r.request_id for b in batches for r in b] == [f"req-{n}" for n in range(2, 9)]
        assert len([r async for b in usage.export_rows(session, None, None) for r in b]) == 10
        with pytest.raises(InvalidRequest, match="after its start"):
            [b async for b in usage.export_rows(session, now, now - timedelta(hours=1))]


async def test_deleting_a_key_keeps_its_usage(store: Store) -> None:
    """Usage rows outlive their key: the foreign key nulls ``key_id`` (enforced on SQLite too)."""
    async with store.session() as session:
        key, _ = await keys.create_key(session, "temp")
        await usage.record_usage(session, _rec(1, key_id=key.id))
        await session.commit()
        await session.execute(delete(ApiKey).where(ApiKey.id == key.id))
        await session.commit()
    async with store.session() as session:
        [row] = await usage.recent_usage(session)
        assert row.key_id is None

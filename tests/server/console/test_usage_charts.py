"""Usage time series: bucketed in SQL the same way on SQLite and PostgreSQL, drawn as shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pendra.server.console import usage_charts
from pendra.server.store import usage as usage_store
from pendra.server.store.db import Store
from pendra.server.store.usage import UsageRecord

NOW = datetime(2026, 3, 10, 12, 30, 15, tzinfo=UTC)


def test_windows_are_aligned_and_end_with_now() -> None:
    """Each period has fixed buckets aligned to the epoch; the last one holds now."""
    for period, (length, bucket) in usage_charts.PERIODS.items():
        win = usage_charts.window(period, NOW)
        assert win.buckets * win.bucket == length
        assert win.since.timestamp() % bucket.total_seconds() == 0
        assert win.start_of(win.buckets - 1) <= NOW < win.start_of(win.buckets)
    assert usage_charts.window("bogus", NOW).period == usage_charts.DEFAULT_PERIOD


async def test_series_buckets_records_by_time(store: Store) -> None:
    """Records land in the bucket of their time; older ones are left out; sums and latency are
    per bucket, latency of served requests only (the 500 is left out); empty buckets are zeros
    with no latency."""
    win = usage_charts.window("24h", NOW)
    last = win.buckets - 1
    samples = [(NOW, 200, 100), (NOW - timedelta(minutes=20), 500, 300),
               (win.start_of(3) + timedelta(seconds=1), 200, 50),
               (win.since - timedelta(seconds=1), 200, 999)]
    async with store.session() as session:
        for n, (when, status, latency) in enumerate(samples):
            await usage_store.record_usage(session, UsageRecord(
                request_id=f"r{n}", kind="chat" if n else "embed", model_requested="m",
                status=status, latency_ms=latency, prompt_tokens=10, completion_tokens=n,
                created_at=when))
        await session.commit()
        series = await usage_store.usage_series(session, win.since,
                                                int(win.bucket.total_seconds()), win.buckets)
        kinds = await usage_store.per_kind(session, win.since)
    assert len(series) == win.buckets
    assert series[last] | {"start": None} == {
        "start": None, "requests": 2, "errors": 1, "prompt_tokens": 20, "completion_tokens": 1,
        "latency_avg_ms": 100.0, "latency_max_ms": 100}
    assert series[3]["requests"] == 1 and series[3]["latency_max_ms"] == 50
    assert sum(p["requests"] for p in series) == 3
    assert series[0] == {"start": win.since, "requests": 0, "errors": 0, "prompt_tokens": 0,
                         "completion_tokens": 0, "latency_avg_ms": None, "latency_max_ms": None}
    assert {k["kind"]: k["requests"] for k in kinds} == {"chat": 2, "embed": 1}


def test_charts_are_shapes_scaled_to_a_nice_maximum() -> None:
    """Bars stack ok under errors, scaled so the tallest fits under a 1-2-5 ceiling; latency lines
    break where a bucket had no requests; an empty period says so."""
    win = usage_charts.window("1h", NOW)
    points = [{"start": win.start_of(i), "requests": 0, "errors": 0, "prompt_tokens": 0,
               "completion_tokens": 0, "latency_avg_ms": None, "latency_max_ms": None}
              for i in range(win.buckets)]
    empty = usage_charts.charts([dict(p) for p in points], win)
    assert all(chart["empty"] for chart in empty)
    points[2] |= {"requests": 7, "errors": 2, "latency_avg_ms": 40.0, "latency_max_ms": 90}
    points[4] |= {"requests": 3, "errors": 0, "latency_avg_ms": 10.0, "latency_max_ms": 10}
    requests, _, latency = usage_charts.charts(points, win)
    assert requests["yticks"][-1]["label"] == "10"
    ok, err = [b for b in requests["bars"] if b["x"] == requests["bars"][0]["x"]]
    assert (ok["class"], err["class"]) == ("ok", "err")
    assert ok["y"] == pytest.approx(err["y"] + err["h"])
    plot_h = requests["base"] - requests["top"]
    assert ok["h"] + err["h"] == pytest.approx(plot_h * 7 / 10, abs=0.05)
    assert len(latency["lines"]) == 4  # avg and max, each broken by the empty bucket 3
    assert latency["yticks"][-1]["label"] == "100 ms"
    assert usage_charts.nice_ceiling(0) == 1 and usage_charts.nice_ceiling(101) == 200

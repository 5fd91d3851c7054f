"""Benchmark 1, added latency: one small non-streaming chat straight to the emulator's ``/api/chat``
and through ``pendra up``'s ``/api/v1/chat/completions``, interleaved in pairs, sequentially and
at a fixed concurrency. Reports p50/p90/p99 of each side and of the per-pair difference."""

from __future__ import annotations

from bench.load import paired, targets, warm_up
from bench.measure import Result, spread
from bench.setup import Setup

NAME = "latency"
CONCURRENCY = 8


async def run(setup: Setup) -> list[Result]:
    direct, pendra = targets(setup.emulator_url, setup.pendra)
    await warm_up(direct, pendra)
    results: list[Result] = []
    count = 60 if setup.quick else 300
    for label, concurrency in (("sequential", 1), (f"concurrency {CONCURRENCY}", CONCURRENCY)):
        a, b, diffs = await paired(direct, pendra, concurrency, count * max(concurrency // 4, 1))
        base, through, added = spread(a), spread(b), spread(diffs)
        for p in ("p50", "p90", "p99"):
            results.append(Result(NAME, f"{label}: {p} latency", through[p], "ms",
                                  baseline=base[p]))
        for p in ("p50", "p90", "p99"):
            results.append(Result(NAME, f"{label}: {p} added latency (per pair)", added[p], "ms",
                                  note=f"{len(diffs)} pairs"))
    return results

"""Benchmark 1, added latency: one small non-streaming chat straight to the emulator's ``/api/chat``
and through a relay's ``/chat/completions``, interleaved in pairs, sequentially and at a fixed
concurrency. Reports p50/p90/p99 of each side and of the per-pair difference (the target: Pendra
adds at most 1 ms at p50 and 3 ms at p99, sequentially)."""

from __future__ import annotations

from bench.load import Relay, paired, targets, warm_up
from bench.measure import Result, spread
from bench.setup import Setup

NAME = "latency"
CONCURRENCY = 8


async def measure(setup: Setup, relay: Relay, bench: str = NAME, prefix: str = "", *,
                  concurrent: bool = True) -> list[Result]:
    """The figures for ``relay``; ``concurrent=False`` keeps to the sequential ones."""
    direct, through_relay = targets(setup.emulator_url, relay)
    await warm_up(direct, through_relay)
    results: list[Result] = []
    count = 60 if setup.quick else 300
    levels = [("sequential", 1)] + ([(f"concurrency {CONCURRENCY}", CONCURRENCY)] if concurrent
                                    else [])
    for label, concurrency in levels:
        a, b, diffs = await paired(direct, through_relay, concurrency,
                                   count * max(concurrency // 4, 1))
        base, through, added = spread(a), spread(b), spread(diffs)
        for p in ("p50", "p90", "p99"):
            results.append(Result(bench, f"{prefix}{label}: {p} latency", through[p], "ms",
                                  baseline=base[p]))
        for p in ("p50", "p90", "p99"):
            results.append(Result(bench, f"{prefix}{label}: {p} added latency (per pair)",
                                  added[p], "ms", note=f"{len(diffs)} pairs"))
    return results


async def run(setup: Setup) -> list[Result]:
    return await measure(setup, setup.relay)

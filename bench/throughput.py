"""Benchmark 2, throughput: closed-loop clients at concurrency 1, 8 and 64 for a fixed time,
straight to the emulator and through ``pendra up`` (worker MAX_CONCURRENT=64); requests/s of each
and Pendra's ratio to the baseline."""

from __future__ import annotations

from bench.load import closed_loop, targets, warm_up
from bench.measure import Result
from bench.setup import Setup

NAME = "throughput"
LEVELS = (1, 8, 64)


async def run(setup: Setup) -> list[Result]:
    direct, pendra = targets(setup.emulator_url, setup.pendra)
    await warm_up(direct, pendra)
    duration = 2.0 if setup.quick else 6.0
    results: list[Result] = []
    for concurrency in LEVELS:
        rates = []
        for target in (direct, pendra):
            latencies, wall = await closed_loop(target, concurrency, duration_s=duration)
            rates.append(len(latencies) / wall)
        results.append(Result(NAME, f"concurrency {concurrency}: requests/s", rates[1], "req/s",
                              baseline=rates[0]))
    return results

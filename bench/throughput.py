"""Benchmark 2, throughput: closed-loop clients at concurrency 1, 16 and 64 for a fixed time,
straight to the emulator and through a relay; requests/s of each and the relay's ratio to the
emulator's own rate in the same run (the target: Pendra at 16 and 64 clients ≥ 10 % of it).

The worker behind ``pendra up`` has ``MAX_CONCURRENT=64`` (bench/deploy.py; the highest the
setting allows), as many slots as the most clients here, so the slot limit is never what caps it.
"""

from __future__ import annotations

from bench.load import Relay, closed_loop, targets, warm_up
from bench.measure import Result
from bench.setup import Setup

NAME = "throughput"
LEVELS = (1, 16, 64)


async def measure(setup: Setup, relay: Relay, bench: str = NAME, prefix: str = "",
                  levels: tuple[int, ...] = LEVELS) -> list[Result]:
    direct, through_relay = targets(setup.emulator_url, relay)
    await warm_up(direct, through_relay)
    duration = 2.0 if setup.quick else 5.0
    results: list[Result] = []
    for concurrency in levels:
        rates = []
        for target in (direct, through_relay):
            latencies, wall = await closed_loop(target, concurrency, duration_s=duration)
            rates.append(len(latencies) / wall)
        results.append(Result(bench, f"{prefix}concurrency {concurrency}: requests/s", rates[1],
                              "req/s", baseline=rates[0]))
    return results


async def run(setup: Setup) -> list[Result]:
    return await measure(setup, setup.relay)

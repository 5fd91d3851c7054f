"""Benchmark 7, embeddings: batch requests of 64 inputs straight to the emulator's ``/api/embed``
and through a relay's ``/embeddings`` (the same ``{"model", "input": [...]}`` body): requests/s of
closed-loop clients, and the per-pair added latency of sequential requests (the target: Pendra
relays batches at ≥ 50 % of the direct rate). Each answer is 64 vectors of 768 floats (about
1 MB of JSON), so this is the relay's cost per byte more than per request."""

from __future__ import annotations

from bench.load import Relay, closed_loop, embed_targets, paired, warm_up
from bench.measure import Result, spread
from bench.setup import Setup

NAME = "embeddings"
INPUTS = 64
CONCURRENCY = 4


async def measure(setup: Setup, relay: Relay, bench: str = NAME, prefix: str = "") -> list[Result]:
    direct, through_relay = embed_targets(setup.emulator_url, relay, INPUTS)
    await warm_up(direct, through_relay, requests=8)
    duration = 2.0 if setup.quick else 5.0
    rates = []
    for target in (direct, through_relay):
        latencies, wall = await closed_loop(target, CONCURRENCY, duration_s=duration)
        rates.append(len(latencies) / wall)
    a, b, diffs = await paired(direct, through_relay, 1, 20 if setup.quick else 60)
    base, through, added = spread(a), spread(b), spread(diffs)
    label = f"{prefix}batches of {INPUTS} inputs"
    return [
        Result(bench, f"{label}: requests/s, {CONCURRENCY} clients", rates[1], "req/s",
               baseline=rates[0]),
        Result(bench, f"{label}: p50 latency, sequential", through["p50"], "ms",
               baseline=base["p50"]),
        Result(bench, f"{label}: p50 added latency (per pair)", added["p50"], "ms",
               note=f"{len(diffs)} pairs"),
    ]


async def run(setup: Setup) -> list[Result]:
    return await measure(setup, setup.relay)

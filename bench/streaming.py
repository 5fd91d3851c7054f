"""Benchmark 3, streaming: tokens/s relayed on one stream and on 32 parallel streams (emulator at
zero per-token delay, so the relay is the limit), and the time to first token added by Pendra.

Tokens are what the emulator generates (``[[tokens=N]]`` in the prompt steers it); a stream's rate
is N over the time from sending the request to its last byte. Time to first token is the time to
the first body bytes after the headers (Pendra sends its headers only once the worker's first
chunk is in, so that is the first token on both sides); it is measured in interleaved pairs.
"""

from __future__ import annotations

import asyncio
import time

from bench.client import EventCounter, HttpError
from bench.load import Target, targets
from bench.measure import Result, spread
from bench.setup import Setup

NAME = "streaming"
PARALLEL = 32


async def one_stream(target: Target) -> tuple[float, float, int]:
    """(time to first body bytes, total time, events seen) of one streamed answer."""
    conn = target.connect()
    counter = EventCounter(b"\n\n" if target.label == "pendra" else b"\n")
    first = 0.0
    try:
        started = time.perf_counter()
        async for arrived, piece in conn.stream(target.path, target.body):
            if not first:
                first = arrived - started
            counter.feed(piece)
        return first, time.perf_counter() - started, counter.count
    finally:
        await conn.close()


async def rate(target: Target, tokens: int, parallel: int) -> float:
    """Aggregate tokens/s of ``parallel`` streams of ``tokens`` tokens each."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one_stream(target) for _ in range(parallel)))
    wall = time.perf_counter() - started
    for _, _, events in outcomes:
        if events < tokens:
            raise HttpError(f"{target.label}: a stream ended after {events} of {tokens} tokens")
    return tokens * parallel / wall


async def ttft_pairs(direct: Target, pendra: Target, count: int) -> tuple[list[float], list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(count):
        ta = (await one_stream(direct))[0]
        tb = (await one_stream(pendra))[0]
        a.append(ta)
        b.append(tb)
    return a, b, [y - x for x, y in zip(a, b)]


async def run(setup: Setup) -> list[Result]:
    results: list[Result] = []
    single, each = (1000, 300) if setup.quick else (4000, 1000)
    for label, tokens, parallel in (("1 stream", single, 1),
                                    (f"{PARALLEL} parallel streams", each, PARALLEL)):
        direct, pendra = targets(setup.emulator_url, setup.pendra,
                                 text=f"count with me [[tokens={tokens}]]", stream=True)
        await rate(pendra, min(tokens, 200), 1)  # warm-up
        runs = 2 if setup.quick else 3  # best of: the machine is shared, the best run is the signal
        base = max([await rate(direct, tokens, parallel) for _ in range(runs)])
        through = max([await rate(pendra, tokens, parallel) for _ in range(runs)])
        results.append(Result(NAME, f"{label}: tokens/s relayed", through, "tok/s", baseline=base,
                              note=f"{tokens} tokens per stream, best of {runs}"))
    direct, pendra = targets(setup.emulator_url, setup.pendra,
                             text="a short answer [[tokens=20]]", stream=True)
    a, b, diffs = await ttft_pairs(direct, pendra, 30 if setup.quick else 100)
    first_direct, first_pendra, added = spread(a), spread(b), spread(diffs)
    for p in ("p50", "p99"):
        results.append(Result(NAME, f"time to first token {p}", first_pendra[p], "ms",
                              baseline=first_direct[p]))
    for p in ("p50", "p99"):
        results.append(Result(NAME, f"added time to first token {p} (per pair)", added[p], "ms"))
    return results

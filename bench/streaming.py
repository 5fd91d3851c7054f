"""Benchmark 3, streaming: chunks/s relayed on one stream and on 32 parallel streams (the emulator
at zero per-token delay, so the relay is the limit), and the time to first chunk a relay adds, for a
short (20-token) and a long (2,000-token) stream.

Targets for Pendra: one stream ≥ 50 % of the direct chunk rate, 32 parallel streams ≥ 50 % of the
direct aggregate, added time to first chunk ≤ 2 ms at p50 for both lengths.

Tokens are what the emulator generates (``[[tokens=N]]`` in the prompt steers it; one token per
chunk on the direct side); a stream's rate is N over the time from sending the request to its last
byte, and it counts only if the answer ended properly (Ollama's ``"done":true`` line, or the relay's
``data: [DONE]``), so a relay that merges chunks into fewer events is not penalised and a stream cut
short fails the benchmark. Time to first chunk is the time to the first body bytes after the
headers (Pendra sends its headers only once the worker's first chunk is in, so that is the first
token on both sides); it is measured in interleaved pairs, so both sides see the same load.
"""

from __future__ import annotations

import asyncio
import time

from bench.client import HttpError
from bench.load import Relay, Target, targets
from bench.measure import Result, spread
from bench.setup import Setup

NAME = "streaming"
PARALLEL = 32
LONG, SHORT = 2000, 20  # tokens in the single-stream and first-chunk figures


async def one_stream(target: Target) -> tuple[float, float, bool]:
    """(time to first body bytes, total time, whether the answer ended properly) of one stream."""
    conn = target.connect()
    first = 0.0
    tail = b""
    try:
        started = time.perf_counter()
        async for arrived, piece in conn.stream(target.path, target.body):
            if not first:
                first = arrived - started
            tail = (tail + piece)[-256:]
        return first, time.perf_counter() - started, target.end in tail
    finally:
        await conn.close()


async def rate(target: Target, tokens: int, parallel: int) -> float:
    """Aggregate tokens/s of ``parallel`` streams of ``tokens`` tokens each."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one_stream(target) for _ in range(parallel)))
    wall = time.perf_counter() - started
    if not all(complete for _, _, complete in outcomes):
        raise HttpError(f"{target.label}: a stream of {tokens} tokens ended without its end marker")
    return tokens * parallel / wall


async def first_chunk_pairs(direct: Target, relayed: Target,
                            count: int) -> tuple[list[float], list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(count):
        ta, _, ok_a = await one_stream(direct)
        tb, _, ok_b = await one_stream(relayed)
        if not (ok_a and ok_b):
            raise HttpError("a stream ended without its end marker")
        a.append(ta)
        b.append(tb)
    return a, b, [y - x for x, y in zip(a, b)]


async def measure(setup: Setup, relay: Relay, bench: str = NAME, prefix: str = "", *,
                  long_first_chunk: bool = True) -> list[Result]:
    """The figures for ``relay``; ``long_first_chunk=False`` skips the 2,000-token first chunks."""
    results: list[Result] = []
    runs = 2 if setup.quick else 3  # best of: the machine is shared, the best run is the signal
    each = 300 if setup.quick else 1000
    for label, tokens, parallel in (("1 stream", LONG, 1),
                                    (f"{PARALLEL} parallel streams", each, PARALLEL)):
        direct, relayed = targets(setup.emulator_url, relay,
                                  text=f"count with me [[tokens={tokens}]]", stream=True)
        await rate(relayed, min(tokens, 200), 1)  # warm-up
        base = max([await rate(direct, tokens, parallel) for _ in range(runs)])
        through = max([await rate(relayed, tokens, parallel) for _ in range(runs)])
        what = "chunks/s relayed" if parallel == 1 else "aggregate chunks/s relayed"
        results.append(Result(bench, f"{prefix}{label}: {what}", through, "chunks/s",
                              baseline=base, note=f"{tokens} tokens per stream, best of {runs}"))
    lengths = [(SHORT, 30 if setup.quick else 100)]
    if long_first_chunk:
        lengths.append((LONG, 10 if setup.quick else 30))
    for tokens, pairs in lengths:
        direct, relayed = targets(setup.emulator_url, relay,
                                  text=f"an answer [[tokens={tokens}]]", stream=True)
        a, b, diffs = await first_chunk_pairs(direct, relayed, pairs)
        first_direct, first_relayed, added = spread(a), spread(b), spread(diffs)
        label = f"{prefix}{tokens}-token stream"
        for p in ("p50", "p99"):
            results.append(Result(bench, f"{label}: time to first chunk {p}", first_relayed[p],
                                  "ms", baseline=first_direct[p]))
        for p in ("p50", "p99"):
            results.append(Result(bench, f"{label}: added time to first chunk {p} (per pair)",
                                  added[p], "ms", note=f"{pairs} pairs"))
    return results


async def run(setup: Setup) -> list[Result]:
    return await measure(setup, setup.relay)

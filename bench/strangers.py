"""Benchmark 7, strangers: what an unauthenticated flood on ``/ws/gpu`` costs a real
``pendra server``. While 20 raw sockets each announce a 4 MB hello and 20 more a 60 MB frame,
``/healthz`` is polled back to back; its p50/p99 are compared with the same poll on the idle server
just before, and the server's peak RSS with its RSS before the flood (the bound the design sets:
p99 under 50 ms, RSS under +50 MB)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.client import Connection
from bench.deploy import pendra_server
from bench.measure import PeakRss, Result, rss_mib, spread
from pendra.testing.strangers import huge_hello, oversized_frame

NAME = "strangers"
ATTACKERS = 20
HELLO_BYTES = 4 * 1024 * 1024
BIG_FRAME_BYTES = 60 * 1024 * 1024


async def _poll(conn: Connection, stop: asyncio.Event, samples: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = await conn.request("GET", "/healthz")
        if status != 200:
            raise RuntimeError(f"/healthz answered {status}")
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.005)


async def _health_during(conn: Connection, work: asyncio.Future[object] | None,
                         idle_s: float) -> list[float]:
    samples: list[float] = []
    stop = asyncio.Event()
    poller = asyncio.create_task(_poll(conn, stop, samples))
    try:
        if work is None:
            await asyncio.sleep(idle_s)
        else:
            await work
    finally:
        stop.set()
        await poller
    return samples


async def run(root: Path, quick: bool) -> list[Result]:
    async with pendra_server(root / "strangers") as server:
        conn = Connection(server.base_url, {})
        try:
            idle = await _health_during(conn, None, 2.0 if quick else 5.0)
            before = rss_mib(server.pid)
            hello = huge_hello(HELLO_BYTES)
            async with PeakRss(server.pid) as peak:
                flood = asyncio.gather(
                    *(oversized_frame(server.base_url, len(hello), hello)
                      for _ in range(ATTACKERS)),
                    *(oversized_frame(server.base_url, BIG_FRAME_BYTES)
                      for _ in range(ATTACKERS)))
                attacked = await _health_during(conn, flood, 0)
            endings = flood.result()
        finally:
            await conn.close()
    base, under = spread(idle), spread(attacked)
    note = (f"{ATTACKERS} x 4 MB hellos + {ATTACKERS} x 60 MB frames: "
            f"{endings.count('closed')} closed, {endings.count('denied')} denied")
    return [Result(NAME, f"/healthz {p} under the flood", under[p], "ms", baseline=base[p],
                   note=note if p == "p99" else "") for p in ("p50", "p99")] + [
        Result(NAME, "server RSS growth under the flood (peak)", peak.peak - before, "MiB",
               note=f"from {before:.0f} MiB")]

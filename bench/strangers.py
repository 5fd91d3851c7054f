"""Benchmark 7, strangers: what an unauthenticated flood on ``/ws/gpu`` costs a real
``pendra server``. From a separate process, rounds (a quarter second apart) of 20 raw sockets each
announcing a 4 MB hello and 20 more announcing a 60 MB frame, all at once
(``python -m pendra.testing.strangers``); meanwhile
``/healthz`` is polled back to back. Its p50/p99 are compared with the same poll on the idle server
just before, and the server's peak RSS with its RSS before the flood (the bound the design sets:
p99 under 50 ms, RSS under +50 MB)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from bench.client import Connection
from bench.deploy import pendra_server
from bench.measure import PeakRss, Result, cpu_seconds, rss_mib, spread

NAME = "strangers"
ATTACKERS = 20
# Between rounds: each round is the scenario (40 strangers at once), repeated for samples.
PAUSE_S = 0.25


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


async def _flood(url: str, rounds: int) -> dict[str, int]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pendra.testing.strangers", url, "--rounds", str(rounds),
        "--pause", str(PAUSE_S), "--hellos", str(ATTACKERS), "--frames", str(ATTACKERS),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the flood exited {child.returncode}")
    endings: dict[str, int] = json.loads(out)
    return endings


async def run(root: Path, quick: bool) -> list[Result]:
    rounds = 5 if quick else 20
    async with pendra_server(root / "strangers") as server:
        conn = Connection(server.base_url, {})
        try:
            idle = await _health_during(conn, None, 2.0 if quick else 5.0)
            before, cpu_before = rss_mib(server.pid), cpu_seconds(server.pid)
            started = time.monotonic()
            async with PeakRss(server.pid) as peak:
                flood = asyncio.ensure_future(_flood(server.base_url, rounds))
                attacked = await _health_during(conn, flood, 0)
            wall = time.monotonic() - started
            cpu = cpu_seconds(server.pid) - cpu_before
            endings = flood.result()
        finally:
            await conn.close()
    base, under = spread(idle), spread(attacked)
    note = (f"{rounds} rounds of {ATTACKERS} x 4 MB hellos + {ATTACKERS} x 60 MB frames in "
            f"{wall:.1f}s: {endings['closed']} closed, {endings['denied']} denied")
    return [Result(NAME, f"/healthz {p} under the flood", under[p], "ms", baseline=base[p],
                   note=note if p == "p99" else "") for p in ("p50", "p99")] + [
        Result(NAME, "server RSS growth under the flood (peak)", peak.peak - before, "MiB",
               note=f"from {before:.0f} MiB"),
        Result(NAME, "server CPU per refused stranger", 1000 * cpu / max(sum(endings.values()), 1),
               "ms")]

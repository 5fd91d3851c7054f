"""Benchmark 6, worker footprint: RSS (and CPU) of a real ``pendra worker`` process, idle and while
it relays 32 streams, behind a real ``pendra server``, in front of the emulator.

The streams are paced (a few ms per token) so that all 32 are open at once for several seconds;
the RSS is the peak sampled every 50 ms from /proc while they run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.client import HttpError
from bench.deploy import pendra_server, pendra_worker
from bench.load import PENDRA_PATH, Target, chat_body
from bench.measure import PeakRss, Result, cpu_percent, cpu_seconds, rss_mib
from bench.streaming import one_stream
from pendra.testing.servers import run_emulator

NAME = "worker footprint"
STREAMS = 32
IDLE_SETTLE_S = 3.0


async def run(root: Path, quick: bool) -> list[Result]:
    tokens, delay = (500, 0.004) if quick else (1500, 0.004)
    async with run_emulator() as emu, pendra_server(root / "footprint") as server, \
            pendra_worker(root / "footprint", server, emu.base_url) as worker:
        assert worker.process is not None
        pid = worker.process.pid
        await asyncio.sleep(IDLE_SETTLE_S)
        idle_rss = rss_mib(pid)
        idle_cpu = await cpu_percent(pid, 2.0 if quick else 5.0)
        target = Target("pendra", server.connection, PENDRA_PATH,
                        chat_body(f"stream along [[tokens={tokens}]] [[delay={delay}]]",
                                  stream=True))
        before = cpu_seconds(pid)
        async with PeakRss(pid) as peak:
            started = asyncio.get_running_loop().time()
            outcomes = await asyncio.gather(*(one_stream(target) for _ in range(STREAMS)))
            wall = asyncio.get_running_loop().time() - started
        busy_cpu = 100 * (cpu_seconds(pid) - before) / wall
        if not all(complete for _, _, complete in outcomes):
            raise HttpError("a stream ended without its end marker")
        after_rss = rss_mib(pid)
    return [Result(NAME, "idle worker RSS", idle_rss, "MiB"),
            Result(NAME, "idle worker CPU", idle_cpu, "% of a core"),
            Result(NAME, f"worker RSS relaying {STREAMS} streams (peak)", peak.peak, "MiB",
                   baseline=idle_rss, note=f"{tokens} tokens each over {wall:.1f}s"),
            Result(NAME, f"worker CPU relaying {STREAMS} streams", busy_cpu, "% of a core",
                   note=f"{STREAMS * tokens / wall:,.0f} tok/s in total"),
            Result(NAME, "worker RSS after the streams", after_rss, "MiB")]

"""A stranger on /ws/gpu gets a small, bounded budget: a real ``pendra server`` under attack.

Attackers here are raw sockets, as cheap for the test as for a real attacker: they complete the
WebSocket upgrade and announce a frame far larger than a hello (4 MB of ``worker_id``, or 60 MB of
anything) before authenticating. The control plane must refuse each one at the frame's header — it
never buffers the payload — while it keeps answering ``/healthz`` and keeps its enrolled worker.
Figures (health-check latency percentiles under attack) are measured in bench/strangers.py; here
only generous ceilings are checked, and the server's memory from /proc. The attacker is
``pendra.testing.strangers``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from cluster import Cluster, start_cluster
from pendra.testing.strangers import huge_hello, oversized_frame
from suite_env import WAIT

ATTACKERS = 20
HELLO_BYTES = 4 * 1024 * 1024
BIG_FRAME_BYTES = 60 * 1024 * 1024
# The bound on the control plane's memory growth under this attack.
RSS_GROWTH_MAX = 50 * 1024 * 1024
# A health check must come back within this even on a loaded 2-core machine (it took 16 s before).
HEALTH_CEILING_S = 3.0 * WAIT


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def health_watch(cluster: Cluster, stop: asyncio.Event) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30 * WAIT) as http:
        while not stop.is_set():
            started = time.monotonic()
            assert (await http.get("/healthz")).status_code == 200
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
    return latencies


async def test_oversized_frames_before_authentication_are_refused_cheaply(tmp_path: Path) -> None:
    """20 parallel 4 MB hellos and 20 parallel 60 MB frames: every one is closed (or denied at
    the upgrade, past the per-address cap) without the payload being buffered — the server's RSS
    grows by less than 50 MB — while /healthz keeps answering promptly and the enrolled worker
    stays connected and serving."""
    async with start_cluster(tmp_path, workers=("alpha",)) as cluster:
        assert cluster.server.process is not None
        pid = cluster.server.process.pid
        before = (await cluster.status())["workers"][0]
        baseline = rss_bytes(pid)
        hello = huge_hello(HELLO_BYTES)
        stop = asyncio.Event()
        watcher = asyncio.create_task(health_watch(cluster, stop))
        try:
            async with asyncio.timeout(120 * WAIT):
                endings = await asyncio.gather(
                    *(oversized_frame(cluster.base_url, len(hello), hello)
                      for _ in range(ATTACKERS)),
                    *(oversized_frame(cluster.base_url, BIG_FRAME_BYTES)
                      for _ in range(ATTACKERS)))
            grown = rss_bytes(pid) - baseline
        finally:
            stop.set()
            latencies = await watcher
        assert set(endings) <= {"closed", "denied"} and "closed" in endings
        assert grown < RSS_GROWTH_MAX, f"RSS grew by {grown / 2**20:.0f} MiB"
        assert latencies and max(latencies) < HEALTH_CEILING_S, max(latencies)
        after = (await cluster.status())["workers"][0]
        assert after["id"] == before["id"] and after["connected_at"] == before["connected_at"]
        async with cluster.http() as http:
            reply = await http.post("/v1/chat/completions", json={
                "model": "llama3.2:latest", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200
        assert "Traceback" not in cluster.server.output()

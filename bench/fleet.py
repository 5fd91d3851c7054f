"""Benchmark 5, fleet: 100 and 1,000 simulated workers (bench/fleet_sim.py) on real WebSockets with
heartbeats at the product default (5 s), connected to one real ``pendra server``.

Figures per fleet size:
- control-plane RSS and CPU while idle (workers connected and beating, no requests);
- routing decision time: ``Router.resolve`` + ``Router.pick`` measured *in-process* over a ``Hub``
  holding the same fleet (same workers, same inventories, no sockets), because the control plane is
  another process; plus, as a cross-check, the round trip of a chat through the real control plane
  to a simulated worker that answers at once (which includes routing, auth, relay and sockets);
- how long ``GET /api/v1/models`` takes to list a model one worker has just announced (a new
  inventory), polled back to back; and how long one such request takes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.deploy import Deployment, pendra_server
from bench.fleet_sim import SHARED_MODELS, SimWorker, connected, enrol_fleet, model
from bench.load import PENDRA_PATH, Target, chat_body, closed_loop
from bench.measure import Result, cpu_percent, percentile, rss_mib, spread
from pendra.catalogue.loader import load_catalogue
from pendra.protocol.frames import PROTOCOL_VERSION, Hello
from pendra.protocol.session import InventoryUpdated
from pendra.server.hub import Hub
from pendra.server.routing import Router

NAME = "fleet"
ROUTED_MODEL = SHARED_MODELS[0]


async def routing_times(fleet: list[SimWorker], picks: int) -> list[float]:
    """Seconds per ``resolve`` + ``pick`` over an in-process Hub holding ``fleet``."""
    hub = Hub(heartbeat_interval_s=5, heartbeat_timeout_s=15)
    for worker in fleet:
        link = hub.attach(Hello(protocol_version=PROTOCOL_VERSION, worker_id=worker.worker_id,
                                name=worker.name, nonce="n", signature="s",
                                max_concurrent=worker.max_concurrent), worker.name)
        link.inventory(InventoryUpdated(list(worker.inventory().backends),
                                        {m.id: m for m in worker.models}, worker.max_concurrent))
    router = Router(hub, load_catalogue(), queue_timeout_s=1)
    times = []
    for _ in range(picks):
        started = time.perf_counter()
        served = router.resolve(ROUTED_MODEL.split(":")[0])  # a bare name, as clients type it
        await router.pick(served)
        times.append(time.perf_counter() - started)
    return times


async def list_reflects(server: Deployment, worker: SimWorker, new_id: str) -> tuple[float, int]:
    """(seconds from sending the inventory to the list showing ``new_id``, polls made)."""
    conn = server.connection()
    try:
        started = time.perf_counter()
        await worker.set_models(worker.models + [model(new_id)])
        polls = 0
        needle = f'"id":"{new_id}"'.encode()
        while True:
            polls += 1
            status, body = await conn.request("GET", "/api/v1/models")
            if status == 200 and needle in body:
                return time.perf_counter() - started, polls
    finally:
        await conn.close()


async def one_size(root: Path, size: int, quick: bool) -> list[Result]:
    label = f"{size} workers"
    results: list[Result] = []
    async with pendra_server(root / f"fleet-{size}") as server:
        fleet = await enrol_fleet(f"sqlite+aiosqlite:///{server.home / 'pendra.db'}", size, "sim")
        ws_url = "ws" + server.base_url[4:] + "/ws/gpu"
        async with connected(ws_url, fleet) as connect_s:
            await asyncio.sleep(2.0)
            idle_rss = rss_mib(server.pid)
            idle_cpu = await cpu_percent(server.pid, 6.0 if quick else 15.0)
            target = Target("pendra", server.connection, PENDRA_PATH, chat_body())
            await closed_loop(target, 1, count=20)
            latencies, _ = await closed_loop(target, 1, count=100 if quick else 300)
            trip = spread(latencies)
            reflect = []
            for i in range(3 if quick else 7):
                seconds, _ = await list_reflects(server, fleet[(i * 37) % size], f"fresh-{i}:latest")
                reflect.append(seconds)
            conn = server.connection()
            started = time.perf_counter()
            for _ in range(10):
                await conn.request("GET", "/api/v1/models")
            list_s = (time.perf_counter() - started) / 10
            await conn.close()
    picks = spread(await routing_times(fleet, 2000 if quick else 10000))
    results += [
        Result(NAME, f"{label}: time to connect all", connect_s, "s"),
        Result(NAME, f"{label}: control-plane RSS, idle", idle_rss, "MiB"),
        Result(NAME, f"{label}: control-plane CPU, idle", idle_cpu, "% of a core",
               note="heartbeats every 5 s"),
        Result(NAME, f"{label}: routing decision p50 (in-process)", picks["p50"] * 1000, "µs"),
        Result(NAME, f"{label}: routing decision p99 (in-process)", picks["p99"] * 1000, "µs"),
        Result(NAME, f"{label}: chat round trip p50 (instant worker)", trip["p50"], "ms"),
        Result(NAME, f"{label}: chat round trip p99 (instant worker)", trip["p99"], "ms"),
        Result(NAME, f"{label}: new model listed by GET /models after", percentile(reflect, 50) * 1000,
               "ms", note=f"median of {len(reflect)}, max {max(reflect) * 1000:.0f} ms"),
        Result(NAME, f"{label}: one GET /api/v1/models", list_s * 1000, "ms",
               note=f"{size + len(SHARED_MODELS)} models"),
    ]
    return results


async def run(root: Path, quick: bool) -> list[Result]:
    results: list[Result] = []
    for size in (100, 1000):
        results += await one_size(root, size, quick)
        print(f"    ({size} workers done at {datetime.now(UTC):%H:%M:%S})", flush=True)
    return results

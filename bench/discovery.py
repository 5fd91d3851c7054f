"""Benchmark 4, discovery: the worker's discovery pass (``BackendRegistry.refresh``: verify, tags,
then ``/api/show`` per model, at most 5 in flight) over 200 models whose ``/api/show`` takes 50 ms.

Two baselines: the same-run **direct** floor — the emulator's own ``/api/tags`` then 200
``/api/show`` calls, 5 in flight, from a bare HTTP client (what any client of this emulator pays,
its per-request overhead included) — and the arithmetic ideal (200 × 50 ms / 5 = 2.0 s). Also the
peak concurrent ``/api/show`` the emulator saw. Run in this process against a real emulator over
HTTP; each side is timed alternately and the best of the rounds is kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from bench.measure import Result
from pendra import config as cfg
from pendra.backends.ollama.discovery import SHOW_CONCURRENCY
from pendra.backends.registry import BackendRegistry
from pendra.home import Home
from pendra.testing.servers import run_emulator

NAME = "discovery"
MODELS = 200
SHOW_DELAY_S = 0.05


async def _direct(base_url: str) -> float:
    """Seconds for tags + every show at SHOW_CONCURRENCY in flight, with nothing of Pendra's."""
    gate = asyncio.Semaphore(SHOW_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        started = time.perf_counter()
        tags = (await http.get("/api/tags")).json()["models"]

        async def show(name: str) -> None:
            async with gate:
                (await http.post("/api/show", json={"model": name})).raise_for_status()

        await asyncio.gather(*(show(t["name"]) for t in tags))
        return time.perf_counter() - started


async def run(root: Path, quick: bool) -> list[Result]:
    ideal = MODELS * SHOW_DELAY_S / SHOW_CONCURRENCY
    async with run_emulator(models="none", show_delay_s=SHOW_DELAY_S) as emu:
        await emu.generate_models(MODELS)
        home = Home(root / "discovery")
        home.ensure()
        settings = cfg.load_worker(home, {"OLLAMA_ENDPOINT": emu.base_url, "WORKER_ID": "wrk-bench",
                                          "PENDRA_HOME": str(home)}, require_key=False)
        timings, direct = [], []
        for _ in range(1 if quick else 3):
            direct.append(await _direct(emu.base_url))
            registry = BackendRegistry(settings)  # a fresh cache: every model is described again
            try:
                await emu.reset_stats()
                started = time.perf_counter()
                await registry.refresh()
                timings.append(time.perf_counter() - started)
                found = len(registry.models())
            finally:
                await registry.aclose()
            if found != MODELS:
                raise RuntimeError(f"discovery found {found} of {MODELS} models")
        peak = (await emu.stats())["show_max_in_flight"]
    best = min(timings)
    what = f"discover {MODELS} models, /api/show {SHOW_DELAY_S * 1000:.0f} ms each"
    return [Result(NAME, f"{what}: vs direct", best, "s", baseline=min(direct),
                   note=f"best of {len(timings)}; direct = the same calls, bare client"),
            Result(NAME, f"{what}: vs ideal", best, "s", baseline=ideal,
                   note="ideal = 200 x 50 ms / 5 in flight, no overhead at all"),
            Result(NAME, "peak concurrent /api/show", peak, "calls", note="bound: 5")]

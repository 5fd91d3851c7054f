"""Benchmark 4, discovery: the worker's discovery pass (``BackendRegistry.refresh``: verify, tags,
then ``/api/show`` per model, at most 5 in flight) over 200 models whose ``/api/show`` takes 50 ms,
against the ideal for 5 in flight (200 × 50 ms / 5 = 2.0 s); the peak concurrent ``/api/show``
the emulator saw. Run in this process against a real emulator over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

from bench.measure import Result
from pendra import config as cfg
from pendra.backends.ollama.discovery import SHOW_CONCURRENCY
from pendra.backends.registry import BackendRegistry
from pendra.home import Home
from pendra.testing.servers import run_emulator

NAME = "discovery"
MODELS = 200
SHOW_DELAY_S = 0.05


async def run(root: Path, quick: bool) -> list[Result]:
    ideal = MODELS * SHOW_DELAY_S / SHOW_CONCURRENCY
    async with run_emulator(models="none", show_delay_s=SHOW_DELAY_S) as emu:
        await emu.generate_models(MODELS)
        home = Home(root / "discovery")
        home.ensure()
        settings = cfg.load_worker(home, {"OLLAMA_ENDPOINT": emu.base_url, "WORKER_ID": "wrk-bench",
                                          "PENDRA_HOME": str(home)}, require_key=False)
        timings = []
        for _ in range(1 if quick else 3):
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
    return [Result(NAME, f"discover {MODELS} models, /api/show {SHOW_DELAY_S * 1000:.0f} ms each",
                   best, "s", baseline=ideal, note=f"best of {len(timings)}; ideal = 5 in flight"),
            Result(NAME, "peak concurrent /api/show", peak, "calls", note="bound: 5")]

"""``python -m bench [--quick] [--only NAME ...] [--out FILE]``: run Pendra's benchmarks.

Each benchmark prints its figures as it finishes, with the ratio against a baseline measured in the
same run where it has one; at the end a Markdown table of everything is printed (and, when LiteLLM's
proxy ran, its figures beside Pendra's) and the results (with the machine they ran on) are written
as JSON to ``artifacts/bench/`` (or ``--out``); the ``profile`` benchmark leaves its flame graph
there too. Benchmarks are not tests: nothing here asserts a figure, only that every request
succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import (discovery, embeddings, fleet, footprint, guarantees, latency, profile,
                   strangers, streaming, throughput, versus)
from bench.deploy import temp_root
from bench.measure import Result, fmt, machine
from bench.setup import Setup, shared_setup

# On one emulator and one `pendra up`, in this order (the profile last: the state the run measured).
SHARED: dict[str, Callable[[Setup], Awaitable[list[Result]]]] = {
    "latency": latency.run, "throughput": throughput.run, "streaming": streaming.run,
    "embeddings": embeddings.run, "guarantees": guarantees.run, "litellm": versus.run,
    "profile": profile.run}
ALONE: dict[str, Callable[[Path, bool], Awaitable[list[Result]]]] = {
    "discovery": discovery.run, "fleet": fleet.run, "footprint": footprint.run,
    "strangers": strangers.run}
ALL = (*SHARED, *ALONE)
OUT_DIR = profile.OUT_DIR


def table(results: list[Result]) -> str:
    rows = ["| Benchmark | Figure | Measured | Baseline | Ratio |", "|---|---|---|---|---|"]
    for r in results:
        base = f"{fmt(r.baseline)} {r.unit}" if r.baseline is not None else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        note = f" ({r.note})" if r.note else ""
        rows.append(f"| {r.bench} | {r.name}{note} | {fmt(r.value)} {r.unit} | {base} | {ratio} |")
    return "\n".join(rows)


def report(name: str, found: list[Result], seconds: float) -> None:
    print(f"\n== {name} ({seconds:.0f}s)", flush=True)
    for result in found:
        print(result.line(), flush=True)


async def main(chosen: list[str], quick: bool, out: Path) -> int:
    info = machine()
    print("Pendra benchmarks on " + ", ".join(f"{k}: {v}" for k, v in info.items())
          + (" (quick)" if quick else ""), flush=True)
    results: list[Result] = []
    started_all = time.monotonic()
    if any(name in SHARED for name in chosen):
        async with shared_setup(quick, with_litellm="litellm" in chosen) as setup:
            for name, bench in SHARED.items():
                if name in chosen:
                    started = time.monotonic()
                    found = await bench(setup)
                    report(name, found, time.monotonic() - started)
                    results += found
    async with temp_root() as root:
        for name, run in ALONE.items():
            if name in chosen:
                started = time.monotonic()
                found = await run(root, quick)
                report(name, found, time.monotonic() - started)
                results += found
    print(f"\nAll done in {time.monotonic() - started_all:.0f}s.\n\n{table(results)}", flush=True)
    if compared := versus.side_by_side(results):
        print(f"\nPendra and LiteLLM's proxy in this run (ratio: over direct):\n\n{compared}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "quick": quick,
                               "results": [r.to_dict() for r in results]}, indent=2) + "\n")
    print(f"\nResults written to {out}")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter windows")
    parser.add_argument("--only", nargs="+", choices=ALL, default=list(ALL), metavar="NAME",
                        help=f"run only these: {', '.join(ALL)}")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON results")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse(sys.argv[1:])
    target = args.out or OUT_DIR / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    sys.exit(asyncio.run(main(args.only, args.quick, target)))

"""``python -m bench.profile [--seconds S] [--load streams|chat] [--tag NAME]``: where ``pendra up``
spends its time while relaying, sampled by py-spy (the ``bench`` extra) from outside the process.
``python -m bench`` runs it too, last, as the ``profile`` benchmark (a flame graph of the state
the run measured).

The load is the streaming benchmark's (32 parallel zero-delay streams, back to back) or, with
``--load chat``, 64 closed-loop non-streaming chats. Written to ``artifacts/bench/``:
``profile-TAG-LOAD-STAMP.svg`` (the flame graph, ``py-spy record --format flamegraph``),
``….txt`` (the collapsed stacks) and ``…-summary.txt``: the functions with the most samples on top
of the stack (self) and, among Pendra's own, the most samples anywhere on it (inclusive), on the
event loop's thread only. docs/performance.md says how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.load import closed_loop, targets
from bench.measure import Result
from bench.setup import Setup, shared_setup
from bench.streaming import rate

NAME = "profile"
OUT_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "bench"
TOP = 25
RATE_HZ = 200  # samples a second: enough for a 10 s profile, cheap enough not to change it


@dataclass
class Summary:
    total: int
    self_time: Counter[str]
    inclusive: Counter[str]

    def text(self, top: int = TOP) -> str:
        total = max(self.total, 1)
        lines = [f"{self.total} samples on the event loop's thread", "", "Self (top of stack):"]
        lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self.self_time.most_common(top)]
        lines += ["", "Inclusive, Pendra's own functions:"]
        lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self.inclusive.most_common(top)]
        return "\n".join(lines)


def summarise(collapsed: Path) -> Summary:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames or not frames[0].startswith("<module> (pendra"):
            continue  # only the event loop's thread (aiosqlite's threads mostly wait on a queue)
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            if "pendra" in frame:
                inclusive[frame] += count
    return Summary(total, self_time, inclusive)


def py_spy() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in [Path(sys.executable).with_name("py-spy")] if p.is_file()), None)


async def record(setup: Setup, seconds: float, load: str, tag: str) -> tuple[Path, Path, str]:
    """Sample ``setup``'s ``pendra up`` under ``load``: (flame graph, summary file, what ran)."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed (the `bench` extra)")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    collapsed = OUT_DIR / f"profile-{tag}-{load}-{stamp}.txt"
    flame = collapsed.with_suffix(".svg")
    summary = OUT_DIR / f"profile-{tag}-{load}-{stamp}-summary.txt"
    text = "count with me [[tokens=300]]" if load == "streams" else "Say hello in five words"
    _, pendra = targets(setup.emulator_url, setup.relay, text=text, stream=load == "streams")
    await closed_loop(pendra, 4, count=20) if load == "chat" else await rate(pendra, 300, 4)
    procs = [await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(setup.pendra.pid), "--duration", str(max(int(seconds), 1)),
        "--rate", str(RATE_HZ), "--nonblocking", "--format", fmt, "--output", str(out),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for fmt, out in (("raw", collapsed), ("flamegraph", flame))]
    done = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds + 1:
        if load == "streams":
            await rate(pendra, 300, 32)
            done += 32
        else:
            done += len((await closed_loop(pendra, 64, duration_s=1.0))[0])
    for proc in procs:
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"py-spy failed ({proc.returncode}): "
                               f"{err.decode(errors='replace')[-300:]}")
    what = f"{done} {'streams' if load == 'streams' else 'requests'} while sampling"
    summary.write_text(f"{what}\nflame graph: {flame}\n\n{summarise(collapsed).text()}\n")
    return flame, summary, what


async def run(setup: Setup) -> list[Result]:
    """The ``profile`` benchmark: streams for a few seconds; the top self frames as figures."""
    try:
        flame, summary_path, what = await record(setup, 5 if setup.quick else 10, "streams",
                                                 "run")
    except RuntimeError as exc:
        return [Result(NAME, "flame graph: not recorded", float("nan"), "", note=str(exc))]
    summary = summarise(flame.with_suffix(".txt"))
    results = [Result(NAME, "samples on the event loop's thread", summary.total, "samples",
                      note=f"{what}; flame graph {flame.name}, summary {summary_path.name}")]
    for frame, count in summary.self_time.most_common(5):
        results.append(Result(NAME, f"self: {frame[:90]}", 100 * count / max(summary.total, 1),
                              "% of samples"))
    return results


async def main(seconds: float, load: str, tag: str) -> int:
    async with shared_setup(quick=False) as setup:
        flame, summary, _ = await record(setup, seconds, load, tag)
    print(summary.read_text())
    print(f"flame graph: {flame}; summary: {summary}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--load", choices=("streams", "chat"), default="streams")
    parser.add_argument("--tag", default="run", help="a word for the file names, e.g. before/after")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.seconds, args.load, args.tag)))

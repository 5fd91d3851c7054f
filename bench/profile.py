"""``python -m bench.profile [--seconds S] [--load streams|chat]``: where ``pendra up`` spends its
time while relaying, sampled by py-spy (the ``bench`` extra) from outside the process.

The load is the streaming benchmark's (32 parallel zero-delay streams, back to back) or, with
``--load chat``, 64 closed-loop non-streaming chats. py-spy writes collapsed stacks and a flame
graph to ``artifacts/bench/``; this prints the functions with the most samples on top of the stack
(self) and, among Pendra's own, the most samples anywhere on it (inclusive), on the event loop's
thread only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.__main__ import OUT_DIR
from bench.load import closed_loop, targets
from bench.setup import shared_setup
from bench.streaming import rate

TOP = 25


def summarise(collapsed: Path) -> str:
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
    lines = [f"{total} samples on the event loop's thread", "", "Self (top of stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_time.most_common(TOP)]
    lines += ["", "Inclusive, Pendra's own functions:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(TOP)]
    return "\n".join(lines)


async def main(seconds: float, load: str, tag: str) -> int:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    collapsed = OUT_DIR / f"profile-{tag}-{load}-{stamp}.txt"
    flame = collapsed.with_suffix(".svg")
    async with shared_setup(quick=False) as setup:
        text = "count with me [[tokens=300]]" if load == "streams" else "Say hello in five words"
        _, pendra = targets(setup.emulator_url, setup.pendra, text=text, stream=load == "streams")
        await closed_loop(pendra, 4, count=20) if load == "chat" else await rate(pendra, 300, 4)
        procs = [await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(setup.pendra.pid), "--duration", str(int(seconds)),
            "--rate", "200", "--nonblocking", "--format", fmt, "--output", str(out),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
            await proc.wait()
    print(f"{done} {'streams' if load == 'streams' else 'requests'} while sampling; "
          f"collapsed stacks: {collapsed}; flame graph: {flame}\n")
    print(summarise(collapsed))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--load", choices=("streams", "chat"), default="streams")
    parser.add_argument("--tag", default="run", help="a word for the file names, e.g. before/after")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.seconds, args.load, args.tag)))

"""Numbers for the benchmarks: percentiles, one result row, process RSS/CPU from /proc, the machine.

Rules: percentiles are nearest-rank on the sorted samples (no interpolation, so p99 of 100 samples
is the 99th); times are stored in seconds and printed in milliseconds; RSS and CPU come from
``/proc/<pid>/status`` and ``/proc/<pid>/stat`` (Linux only, no psutil); a ratio is always
"Pendra over the baseline measured in the same run".
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], p: float) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def spread(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99 in milliseconds."""
    return {f"p{p}": percentile(samples, p) * 1000 for p in (50, 90, 99)}


@dataclass
class Result:
    """One figure of one benchmark: what was measured, the value, and its baseline if it has one."""

    bench: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]

    def line(self) -> str:
        text = f"  {self.name:<52} {fmt(self.value):>10} {self.unit}"
        if self.baseline is not None:
            text += f"   (baseline {fmt(self.baseline)} {self.unit}, ratio {self.ratio:.2f}x)"
        if self.note:
            text += f"   [{self.note}]"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"bench": self.bench, "name": self.name, "value": self.value, "unit": self.unit,
                "baseline": self.baseline, "ratio": self.ratio, "note": self.note, **self.extra}


def fmt(value: float) -> str:
    if isinstance(value, int):  # a count
        return f"{value:,}"
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (its own threads, not its children)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


async def cpu_percent(pid: int, window_s: float) -> float:
    """Average CPU use of ``pid`` over the next ``window_s`` seconds (100 = one core)."""
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(window_s)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


class PeakRss:
    """Samples a process's RSS every ``interval_s`` while running; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mib(self.pid))
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, rss_mib(self.pid))


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(l.split(":", 1)[1].strip() for l in info if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = "?"
    try:
        with open("/proc/meminfo") as info:
            kib = int(next(l for l in info if l.startswith("MemTotal")).split()[1])
            ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram": ram,
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}

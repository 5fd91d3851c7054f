"""The CLI's view of one install: a live bar while it runs, one summary line when it ends.

Rules:
- The speed is the pull's own: bytes moved since the download began over the seconds since then,
  on the monotonic clock. The download begins at the first figure with a known total when it
  reports no bytes yet; when that first figure already carries bytes (progress is relayed in
  batches, so a fast pull's first figure can hold most of it), it began after the figure before
  it (queued, pulling the manifest), and is timed from there with all its bytes. Bytes already
  there when this command started watching (an install it joined) are not counted.
- Why not Rich's own speed column: it measures only what arrives after its first sample, so a
  one-second pull whose first figure held the model's weights showed the tail layers' few kB/s.
- Units are decimal, like Ollama's and the size column (kB = 1000 bytes), in the bar and in the
  summary alike, with the speed per second ("/s").
- Below ``MIN_RATE_WINDOW_S`` of download there is no honest speed yet: the bar shows "…".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (BarColumn, DownloadColumn, Progress, ProgressColumn, Task,
                           TextColumn, TimeRemainingColumn)
from rich.text import Text

# Shorter than this and a speed is mostly noise (one progress line's worth of bytes).
MIN_RATE_WINDOW_S = 0.2


@dataclass
class PullRate:
    """How fast one pull moves, from the progress figures it reports (see the rules)."""

    clock: Callable[[], float] = time.monotonic
    _start: tuple[float, int] | None = field(default=None, init=False)
    _last: tuple[float, int] | None = field(default=None, init=False)
    _before: float | None = field(default=None, init=False)  # the last figure with no total

    def update(self, completed: int, total: int) -> None:
        now = self.clock()
        if self._start is None:
            if not total:
                self._before = now  # not downloading yet
                return
            if completed and self._before is not None:
                self._start = (self._before, 0)  # it began after the figure before this one
            else:
                self._start = (now, completed)
        self._last = (now, max(completed, self._last[1] if self._last else completed))

    @property
    def bytes(self) -> int:
        if self._start is None or self._last is None:
            return 0
        return self._last[1] - self._start[1]

    @property
    def seconds(self) -> float:
        if self._start is None or self._last is None:
            return 0.0
        return self._last[0] - self._start[0]

    @property
    def per_second(self) -> float | None:
        if self.seconds < MIN_RATE_WINDOW_S or self.bytes <= 0:
            return None
        return self.bytes / self.seconds

    def summary(self) -> str:
        """``"397.8 MB in 2.1 s, 189.4 MB/s"``; or just the bytes when too quick to time."""
        rate = self.per_second
        if rate is None:
            return f"{decimal(self.bytes)} downloaded" if self.bytes else "nothing downloaded"
        return f"{decimal(self.bytes)} in {self.seconds:.1f} s, {decimal(int(rate))}/s"


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text("…" if rate is None else f"{decimal(int(rate))}/s", style="progress.data.speed")


class InstallView:
    """A Rich progress bar for one install, fed ``show(description, completed, total)``."""

    def __init__(self, console: Console, description: str) -> None:
        self.rate = PullRate()
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  _RateColumn(), TimeRemainingColumn(), console=console)
        self._task = self._progress.add_task(description, total=None, rate=None)

    def __enter__(self) -> InstallView:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def show(self, description: str, completed: int, total: int) -> None:
        self.rate.update(completed, total)
        self._progress.update(self._task, description=description, completed=completed,
                              total=total or None, rate=self.rate.per_second)

"""The Usage page's time windows and the geometry of its inline SVG charts.

Rules:
- A period (``1h``, ``24h``, ``7d``, ``30d``) is cut into fixed buckets aligned to the epoch, so the
  bars stay put between reloads; the last bucket holds "now".
- The numbers come from the store (``store.usage.usage_series``, bucketed in SQL); this module only
  turns them into shapes and reads no database.
- ``charts`` turns the series into plain shapes (rectangles, polylines, ticks) for
  ``_chart.html``; no JavaScript draws anything. Times on the axes are UTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# period → (its length, the bucket length): 30, 24, 28 and 30 bars.
PERIODS: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=2)),
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
DEFAULT_PERIOD = "24h"
# The SVG's own coordinate space (a half-width chart; a wide one is twice as wide); it scales to
# the card's width in the page, so text stays about this size on a laptop screen.
WIDTH, HEIGHT = 600, 190
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 10, 12, 24
X_LABELS = 6


@dataclass(frozen=True)
class Window:
    period: str
    since: datetime
    bucket: timedelta
    buckets: int

    def start_of(self, index: int) -> datetime:
        return self.since + index * self.bucket


def window(period: str, now: datetime) -> Window:
    """The aligned window for ``period`` (unknown periods fall back to the default)."""
    if period not in PERIODS:
        period = DEFAULT_PERIOD
    length, bucket = PERIODS[period]
    step = int(bucket.total_seconds())
    end = (int(now.timestamp()) // step + 1) * step
    buckets = int(length / bucket)
    return Window(period, datetime.fromtimestamp(end - buckets * step, UTC), bucket, buckets)


# --- geometry -------------------------------------------------------------------------------------


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above ``value`` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _compact(value: float) -> str:
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _time_label(when: datetime, period: str) -> str:
    if period == "1h":
        return when.strftime("%H:%M")
    if period == "24h":
        return when.strftime("%H:00")
    if period == "7d":
        return when.strftime("%a %H:00")
    return when.strftime("%b %d")


def _frame(win: Window, top: float, unit: str, wide: bool) -> dict[str, Any]:
    width = WIDTH * 2 if wide else WIDTH
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    base = MARGIN_TOP + plot_h
    yticks = [{"y": round(base - plot_h * f, 1), "label": _compact(top * f) + unit}
              for f in (0, 0.5, 1)]
    every = max(1, win.buckets // (X_LABELS * 2 if wide else X_LABELS))
    slot = plot_w / win.buckets
    xticks = [{"x": round(MARGIN_LEFT + slot * i, 1),
               "label": _time_label(win.start_of(i), win.period)}
              for i in range(0, win.buckets, every)]
    return {"width": width, "height": HEIGHT, "left": MARGIN_LEFT, "right": width - MARGIN_RIGHT,
            "top": MARGIN_TOP, "base": base, "yticks": yticks, "xticks": xticks, "wide": wide}


def _span(win: Window, index: int) -> str:
    start = win.start_of(index)
    end = start + win.bucket
    fmt = "%H:%M" if win.bucket < timedelta(days=1) else "%b %d"
    day = start.strftime("%b %d ") if win.bucket < timedelta(days=1) else ""
    return f"{day}{start.strftime(fmt)}–{end.strftime(fmt)} UTC"


def stacked_bars(win: Window, points: list[dict[str, Any]], layers: list[tuple[str, str, str]],
                 title: str, unit: str = "", wide: bool = False) -> dict[str, Any]:
    """A stacked bar chart; ``layers`` are (field, css class, legend label), bottom first."""
    totals = [sum(p[field] for field, _, _ in layers) for p in points]
    top = nice_ceiling(max(totals, default=0))
    frame = _frame(win, top, unit, wide)
    plot_h = frame["base"] - frame["top"]
    slot = (frame["right"] - frame["left"]) / win.buckets
    gap = max(1.0, slot * 0.18)
    bars = []
    for index, point in enumerate(points):
        y = frame["base"]
        detail = ", ".join(f"{point[field]:,} {label.lower()}" for field, _, label in layers)
        for field, css, _ in layers:
            height = plot_h * point[field] / top
            if height <= 0:
                continue
            y -= height
            bars.append({"x": round(frame["left"] + slot * index + gap / 2, 2),
                         "y": round(y, 2), "w": round(slot - gap, 2), "h": round(height, 2),
                         "class": css, "title": f"{_span(win, index)}: {detail}"})
    return frame | {"title": title, "kind": "bars", "bars": bars, "lines": [], "dots": [],
                    "legend": [{"class": css, "label": label} for _, css, label in layers],
                    "empty": not any(totals), "total": sum(totals)}


def line_chart(win: Window, points: list[dict[str, Any]], lines: list[tuple[str, str, str]],
               title: str, unit: str = "", wide: bool = False) -> dict[str, Any]:
    """Lines through the buckets that have a value; gaps where there is none."""
    values = [p[field] for p in points for field, _, _ in lines if p[field] is not None]
    top = nice_ceiling(max(values, default=0))
    frame = _frame(win, top, unit, wide)
    plot_h = frame["base"] - frame["top"]
    slot = (frame["right"] - frame["left"]) / win.buckets
    drawn, dots = [], []
    for field, css, label in lines:
        segment: list[str] = []
        for index, point in enumerate(points):
            value = point[field]
            if value is None:
                if segment:
                    drawn.append({"class": css, "points": " ".join(segment)})
                segment = []
                continue
            x = round(frame["left"] + slot * (index + 0.5), 2)
            y = round(frame["base"] - plot_h * value / top, 2)
            segment.append(f"{x},{y}")
            dots.append({"x": x, "y": y, "class": css,
                         "title": f"{_span(win, index)}: {label.lower()} {value:,.0f}{unit}"})
        if segment:
            drawn.append({"class": css, "points": " ".join(segment)})
    return frame | {"title": title, "kind": "lines", "bars": [], "lines": drawn, "dots": dots,
                    "legend": [{"class": css, "label": label} for _, css, label in lines],
                    "empty": not values, "total": None}


def charts(points: list[dict[str, Any]], win: Window) -> list[dict[str, Any]]:
    """The three charts of the Usage page: requests, tokens, latency."""
    for point in points:
        point["ok"] = point["requests"] - point["errors"]
    return [
        stacked_bars(win, points, [("ok", "ok", "Succeeded"), ("errors", "err", "Errors")],
                     "Requests", wide=True),
        stacked_bars(win, points, [("prompt_tokens", "prompt", "Prompt tokens"),
                                   ("completion_tokens", "completion", "Completion tokens")],
                     "Tokens"),
        line_chart(win, points, [("latency_avg_ms", "avg", "Average"),
                                 ("latency_max_ms", "max", "Slowest")], "Latency (served)", " ms"),
    ]

"""The CLI's tables and install speed, as pure logic (cli_output.py, cli_progress.py)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from pendra.cli_output import Column, emit_json, emit_table
from pendra.cli_progress import MIN_RATE_WINDOW_S, PullRate

LONG_ID = "hf.co/some-organisation/a-very-long-model-name-GGUF:Q4_K_M-with-a-suffix"


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    return Console(file=sink, width=50, force_terminal=terminal, no_color=True), sink


def test_a_table_not_on_a_terminal_is_as_wide_as_its_content() -> None:
    """Not on a terminal, a 50-column console prints every cell whole on one line."""
    console, sink = _console(terminal=False)
    emit_table(console, [Column("model", "id", whole=True), Column("about", "about")],
               [{"id": LONG_ID, "about": "words " * 20}])
    text = sink.getvalue()
    assert LONG_ID in text and "…" not in text
    assert ("words " * 19).strip() in text
    assert console.width == 50  # left as it was


def test_whole_columns_keep_their_values_on_a_terminal() -> None:
    """On a narrow terminal the id column stays whole; the other columns wrap instead."""
    console, sink = _console(terminal=True)
    emit_table(console, [Column("id", "id", whole=True), Column("about", "about")],
               [{"id": "wrk-1234abcd", "about": "a long description " * 5}])
    assert "wrk-1234abcd" in sink.getvalue()


def test_none_cells_show_the_columns_empty_text() -> None:
    """A missing value prints as its column's `empty` text, never as None."""
    console, sink = _console(terminal=False)
    emit_table(console, [Column("model", "model", empty="(none served)"),
                         Column("n", "n", numeric=True)], [{"model": None, "n": 3}])
    assert "(none served)" in sink.getvalue() and "None" not in sink.getvalue()


def test_json_is_plain_and_parses() -> None:
    """--json output is exactly the JSON value (no markup, no highlighting, not wrapped)."""
    console, sink = _console(terminal=True)
    data = [{"id": LONG_ID, "size": 10, "tags": ["[bold]x[/bold]"]}]
    emit_json(console, data)
    assert json.loads(sink.getvalue()) == data


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_speed_is_the_pulls_bytes_over_the_pulls_time() -> None:
    """Time before the download starts (queued, the manifest: no total yet) does not count;
    815 MB moved in 2 s is 407.5 MB/s."""
    clock = _Clock()
    rate = PullRate(clock)
    rate.update(0, 0)          # queued
    clock.now += 30
    rate.update(0, 0)          # pulling manifest
    clock.now += 0.5
    rate.update(0, 815_000_000)             # the first layer announced: the download begins
    assert rate.per_second is None
    clock.now += 1
    rate.update(415_000_000, 815_000_000)
    clock.now += 1
    rate.update(815_000_000, 815_000_000)
    assert rate.bytes == 815_000_000 and rate.seconds == 2.0
    assert rate.per_second == 407_500_000
    assert rate.summary() == "815.0 MB in 2.0 s, 407.5 MB/s"


def test_a_first_figure_holding_most_bytes_is_counted_from_the_figure_before() -> None:
    """Progress arrives in batches: a fast pull's first figure may hold the weights already, and
    then only kilobytes follow. Those bytes count, timed from the figure before (the regression:
    "3.9 kB/s" for a one-second pull)."""
    clock = _Clock()
    rate = PullRate(clock)
    rate.update(0, 0)                       # pulling manifest
    clock.now += 0.8
    rate.update(813_000_000, 815_000_000)   # first relayed figure: most of the model is there
    clock.now += 0.2
    rate.update(815_000_000, 815_000_000)   # the small layers
    assert rate.bytes == 815_000_000 and rate.seconds == 1.0
    assert rate.per_second == 815_000_000


def test_bytes_there_before_watching_began_do_not_count() -> None:
    """Joining an install already under way (its first figure has bytes, no figure came before):
    only what moves from then on counts, over the time from then on."""
    clock = _Clock()
    rate = PullRate(clock)
    rate.update(600_000_000, 815_000_000)
    clock.now += 1
    rate.update(815_000_000, 815_000_000)
    assert (rate.bytes, rate.seconds, rate.per_second) == (215_000_000, 1.0, 215_000_000)


def test_too_short_a_pull_has_no_speed() -> None:
    """Below the minimum window the summary gives the bytes alone, not a made-up speed."""
    clock = _Clock()
    rate = PullRate(clock)
    rate.update(0, 1000)
    clock.now += MIN_RATE_WINDOW_S / 2
    rate.update(1000, 1000)
    assert rate.per_second is None and rate.summary() == "1.0 kB downloaded"

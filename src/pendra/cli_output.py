"""How the ``pendra`` command prints what it lists: a table for people, JSON for programs.

Rules:
- Every command that lists things takes ``--json`` and prints ``emit_json(data)``: one JSON value
  (an array, or an object for summaries) with stable snake_case keys, documented in docs/cli.md,
  and nothing else on stdout. Times are ISO 8601 UTC strings, sizes bytes, durations milliseconds;
  a missing value is ``null``, never a placeholder string.
- Tables name their columns with ``Column``. When stdout is not a terminal (a pipe, a file,
  systemd's journal) a table is as wide as its content: nothing is cut, wrapped or ellipsised, so
  ``pendra models | grep`` sees whole ids. On a terminal the table fits the window, but a column
  marked ``whole`` (ids, names, tags) keeps its longest value on one line; the others wrap.
- A ``None`` cell prints as its column's ``empty`` text ("—" unless the column says otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

EMPTY = "—"
# Wider than any table: measuring at this width gives a table's natural (unwrapped) width.
_UNBOUNDED = 1_000_000


@dataclass(frozen=True)
class Column:
    """One table column: its header, the row key it shows, and how."""

    header: str
    key: str
    whole: bool = False
    empty: str = EMPTY
    show: Callable[[Any], str] | None = None
    numeric: bool = False

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key)
        if value is None:
            return self.empty
        if self.show is not None:
            return self.show(value)
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value) or self.empty
        return str(value)


def emit_json(console: Console, data: Any) -> None:
    """``data`` as indented JSON on ``console``'s stream, with nothing added or highlighted."""
    console.print(json.dumps(data, indent=2, default=str), markup=False, highlight=False,
                  soft_wrap=True, crop=False)


def build_table(columns: Iterable[Column], rows: Iterable[Mapping[str, Any]],
                title: str | None = None) -> Table:
    columns, rows = list(columns), list(rows)
    cells = [[c.cell(r) for c in columns] for r in rows]
    table = Table(title=title)
    for index, column in enumerate(columns):
        longest = max((len(line) for row in cells for line in row[index].splitlines()), default=0)
        table.add_column(column.header, justify="right" if column.numeric else "left",
                         no_wrap=column.whole, overflow="fold",
                         min_width=max(longest, len(column.header)) if column.whole else None)
    for row in cells:
        table.add_row(*row)
    return table


def emit_table(console: Console, columns: Iterable[Column], rows: Iterable[Mapping[str, Any]],
               title: str | None = None) -> None:
    """A table of ``rows`` (see the rules: whole when stdout is not a terminal)."""
    table = build_table(columns, rows, title)
    if console.is_terminal:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update_width(_UNBOUNDED)).maximum
    before = console.width
    console.width = max(natural, 1)  # print() can narrow a console, never widen it
    try:
        console.print(table, crop=False)
    finally:
        console.width = before

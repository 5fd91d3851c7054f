"""``python -m bench.compare BEFORE.json AFTER.json``: one Markdown table of two runs' figures.

Rows are matched by benchmark and figure name; each side shows Pendra's value and, where the
figure has one, its ratio to the baseline measured in that same run (so a change on a shared,
noisy machine is judged by ratios, not by raw values alone).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.measure import fmt


def cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    text = f"{fmt(row['value'])} {row['unit']}"
    if row.get("ratio") is not None:
        text += f" (baseline {fmt(row['baseline'])}, {row['ratio']:.2f}x)"
    return text


def table(before: dict[str, Any], after: dict[str, Any]) -> str:
    def key(row: dict[str, Any]) -> tuple[str, str]:
        return row["bench"], row["name"]

    old = {key(r): r for r in before["results"]}
    new = {key(r): r for r in after["results"]}
    order = list(old) + [k for k in new if k not in old]
    lines = ["| Benchmark | Figure | Before | After |", "|---|---|---|---|"]
    for k in order:
        lines.append(f"| {k[0]} | {k[1]} | {cell(old.get(k))} | {cell(new.get(k))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    runs = [json.loads(Path(p).read_text()) for p in sys.argv[1:3]]
    print(table(*runs))

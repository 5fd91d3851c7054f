"""Benchmark 9, LiteLLM's proxy in the same run (bench/litellm_proxy.py): the same emulator, the
same load generator and the same load shapes as Pendra's latency, throughput, streaming and
embeddings figures, each with the same direct baseline, so the two relays' ratios can be read side
by side (``python -m bench`` prints them together at the end). A subset, to keep the run short:
sequential latency, 16 and 64 clients, the streams and the 20-token first chunk, embeddings.

If LiteLLM is not installed or does not start, that is the one figure reported, with the reason.
"""

from __future__ import annotations

import math

from bench import embeddings, latency, streaming, throughput
from bench.client import HttpError
from bench.measure import Result, fmt
from bench.setup import Setup

NAME = "litellm"


async def run(setup: Setup) -> list[Result]:
    relay = setup.litellm.relay
    if relay is None:
        return [Result(NAME, "LiteLLM's proxy: not measured", math.nan, "",
                       note=setup.litellm.reason)]
    results: list[Result] = []
    try:
        results += await latency.measure(setup, relay, NAME, "latency, ", concurrent=False)
        results += await throughput.measure(setup, relay, NAME, "throughput, ", levels=(16, 64))
        results += await streaming.measure(setup, relay, NAME, "streaming, ",
                                           long_first_chunk=False)
        results += await embeddings.measure(setup, relay, NAME, "embeddings, ")
    except HttpError as exc:  # its failure is a finding, not a reason to lose the rest of the run
        results.append(Result(NAME, "LiteLLM's proxy: measurement stopped", math.nan, "",
                              note=str(exc)[:300]))
    return results


def _cell(result: Result) -> str:
    text = f"{fmt(result.value)} {result.unit}".strip()
    return text + (f" ({result.ratio:.2f}x)" if result.ratio is not None else "")


def side_by_side(results: list[Result]) -> str:
    """Markdown rows pairing each LiteLLM figure with Pendra's of the same name in this run ("" if
    LiteLLM did not run)."""
    pendra = {f"{r.bench}, {r.name}": r for r in results if r.bench != NAME}
    rows = ["| Figure | Pendra | LiteLLM |", "|---|---|---|"]
    for r in results:
        mine = pendra.get(r.name) if r.bench == NAME else None
        if mine is not None:
            rows.append(f"| {r.name} | {_cell(mine)} | {_cell(r)} |")
    return "\n".join(rows) if len(rows) > 2 else ""

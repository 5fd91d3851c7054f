"""The benchmarks (bench/) are not run by the suite, but they must not rot: every module imports,
``python -m bench --help`` and ``python -m bench.profile --help`` work, LiteLLM's absence is a
reason and not a crash, and the LiteLLM comparison pairs figures by name. Nothing is measured."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("latency", "throughput", "streaming", "embeddings", "guarantees", "litellm",
              "profile", "discovery", "fleet", "footprint", "strangers")


@pytest.fixture
def bench_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_every_bench_module_imports(bench_path: None) -> None:
    """Each module under bench/ imports (a renamed function in src/ breaks this, not a bench run)."""
    import bench

    names = [m.name for m in pkgutil.iter_modules(bench.__path__)]
    assert {"embeddings", "guarantees", "litellm_proxy", "versus", "profile"} <= set(names)
    for name in names:
        importlib.import_module(f"bench.{name}")


def test_bench_help_lists_every_benchmark() -> None:
    """``python -m bench --help`` exits 0 and offers every benchmark to --only."""
    result = _python("-m", "bench", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for name in BENCHMARKS:
        assert name in text


def test_profile_help() -> None:
    """``python -m bench.profile --help`` exits 0 (it needs py-spy only when it records)."""
    result = _python("-m", "bench.profile", "--help")
    assert result.returncode == 0, result.stderr
    assert "--load" in result.stdout


async def test_litellm_missing_is_a_reason(bench_path: None, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without .venv-litellm the comparison yields no relay and says plainly why."""
    from bench import litellm_proxy

    monkeypatch.setattr(litellm_proxy, "VENV", tmp_path / "no-venv")
    monkeypatch.delenv("PENDRA_BENCH_LITELLM", raising=False)
    async with litellm_proxy.litellm_proxy(tmp_path, "http://127.0.0.1:9") as proxy:
        assert proxy.relay is None
        assert "not installed" in proxy.reason


def test_litellm_figures_sit_beside_pendra_s(bench_path: None) -> None:
    """The side-by-side table pairs each LiteLLM figure with Pendra's of the same name only."""
    from bench.measure import Result
    from bench.versus import side_by_side

    results = [Result("latency", "sequential: p50 latency", 1.5, "ms", baseline=0.5),
               Result("fleet", "1000 workers: control-plane RSS, idle", 150, "MiB"),
               Result("litellm", "latency, sequential: p50 latency", 25.0, "ms", baseline=0.5)]
    rows = side_by_side(results).splitlines()
    assert rows[2] == "| latency, sequential: p50 latency | 1.50 ms (3.00x) | 25.0 ms (50.00x) |"
    assert len(rows) == 3
    assert side_by_side(results[:2]) == ""

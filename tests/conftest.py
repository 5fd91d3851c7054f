"""Suite-wide fixtures. Shared constants live in suite_env.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite_env import POSTGRES_URL, WAIT  # noqa: F401  (re-exported for older imports)


@pytest.fixture
def pendra_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private PENDRA_HOME for one test (also set in the environment for child processes)."""
    home = tmp_path / "pendra-home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("PENDRA_HOME", str(home))
    return home

"""PullProgress: the one place install progress is kept from going backwards."""

from __future__ import annotations

from pendra.backends.base import InstallProgress
from pendra.backends.ollama.backend import PullProgress


def test_progress_never_goes_backwards_when_ollama_does() -> None:
    """Layers add up; a layer that restarts (a retried download) and a new layer whose total is not
    known yet never make ``completed`` fall, and ``total`` is never below ``completed``."""
    pull = PullProgress()
    assert pull.update({"status": "pulling manifest"}) == InstallProgress("pulling manifest", 0, 0)
    assert pull.update({"status": "pulling a", "digest": "sha256:a", "total": 100,
                        "completed": 60}) == InstallProgress("pulling a", 60, 100)
    # Layer a starts over: its figure may drop on the wire, never in the overall one.
    assert pull.update({"status": "pulling a", "digest": "sha256:a", "total": 100,
                        "completed": 10}) == InstallProgress("pulling a", 60, 100)
    assert pull.update({"status": "pulling b", "digest": "sha256:b", "completed": 50}) \
        == InstallProgress("pulling b", 110, 110)
    assert pull.update({"status": "pulling b", "digest": "sha256:b", "total": 200,
                        "completed": 50}) == InstallProgress("pulling b", 110, 300)
    assert pull.update({"status": "success"}) == InstallProgress("success", 110, 300)


def test_every_figure_it_reports_is_monotonic_over_a_shuffled_stream() -> None:
    """Whatever order Ollama's lines come in, the reported ``completed`` only grows."""
    lines = [{"status": "pulling", "digest": f"sha256:{layer}", "total": 1000,
              "completed": done} for done in (900, 100, 500, 1000, 0)
             for layer in ("a", "b", "c")]
    pull = PullProgress()
    seen = [pull.update(line) for line in lines]
    assert [p.completed for p in seen] == sorted(p.completed for p in seen)
    assert all(p.total >= p.completed for p in seen)
    assert seen[-1] == InstallProgress("pulling", 3000, 3000)

"""The emulated server's state: its settings (steerable through ``/_emulator/config``), the
installed models, the loaded runners and what it has received.

Loading follows §9.2–§9.3: a different ``num_ctx`` for a loaded model counts as a reload, and each
request resets the runner's expiry to now + ``keep_alive`` (5 minutes by default, about 292 years
when negative). Requests are recorded (at most ``RECORD_LIMIT``) for tests to inspect.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pendra.testing.ollama.facts import DEFAULT_VERSION
from pendra.testing.ollama.models import DEFAULT_MODELS, REGISTRY, ModelSpec, normalise
from pendra.testing.ollama.wire import local_now

# Recorded requests kept for /_emulator/requests; older ones are dropped (bounded memory in benches).
RECORD_LIMIT = 1000
# OLLAMA_KEEP_ALIVE's default (§9.1) and what a negative keep_alive means: forever (§3.9).
DEFAULT_KEEP_ALIVE = timedelta(minutes=5)
FOREVER = timedelta(days=365 * 292)


@dataclass
class Settings:
    """Knobs a test may turn at start-up (command line) or later (``/_emulator/config``)."""

    version: str = DEFAULT_VERSION
    latency_s: float = 0.0  # before every answer
    show_delay_s: float = 0.0  # inside /api/show, to measure discovery's concurrency
    token_delay_s: float = 0.0  # before each streamed token (a [[delay=S]] marker wins)
    pull_bytes_per_s: float = 2_000_000_000.0
    default_num_ctx: int = 4096  # the CPU-only VRAM tier (§5.2)
    fail_show_for: list[str] = field(default_factory=list)  # /api/show answers 500 for these
    fail_after_tokens: int | None = None  # the next answer's runner dies after N tokens
    die_during_pull: bool = False  # the process exits halfway through the next pull


@dataclass
class Loaded:
    num_ctx: int
    expires_at: datetime


class Emulator:
    """Everything the handlers share."""

    def __init__(self, settings: Settings, models: list[dict[str, Any]]) -> None:
        self.settings = settings
        self.models: dict[str, ModelSpec] = {}
        for data in models:
            self.add(ModelSpec.from_dict(data))
        self.registry = {normalise(d["name"]): d for d in REGISTRY + DEFAULT_MODELS}
        self.requests: deque[dict[str, Any]] = deque(maxlen=RECORD_LIMIT)
        self.loaded: dict[str, Loaded] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.show_in_flight = 0
        self.show_max_in_flight = 0
        self.cancelled: list[dict[str, Any]] = []
        self.reloads = 0
        self.pulls_cancelled = 0

    def stats(self) -> dict[str, Any]:
        return {"show_in_flight": self.show_in_flight,
                "show_max_in_flight": self.show_max_in_flight, "cancelled": self.cancelled,
                "reloads": self.reloads, "pulls_cancelled": self.pulls_cancelled}

    def add(self, spec: ModelSpec) -> None:
        spec.modified_at = local_now()
        self.models[spec.name.lower()] = spec

    def find(self, name: str) -> ModelSpec | None:
        """Case-insensitive, ``:latest`` when untagged (§1.3)."""
        return self.models.get(normalise(name).lower())

    def remove(self, spec: ModelSpec) -> None:
        del self.models[spec.name.lower()]
        self.loaded.pop(spec.name, None)

    def load(self, spec: ModelSpec, num_ctx: int, keep_alive: Any) -> None:
        current = self.loaded.get(spec.name)
        if current is not None and current.num_ctx != num_ctx:
            self.reloads += 1
        forever = isinstance(keep_alive, int | float) and not isinstance(keep_alive, bool) \
            and keep_alive < 0
        self.loaded[spec.name] = Loaded(num_ctx, local_now() + (FOREVER if forever else DEFAULT_KEEP_ALIVE))

    def unload(self, spec: ModelSpec) -> None:
        self.loaded.pop(spec.name, None)

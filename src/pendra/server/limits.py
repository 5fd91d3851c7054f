"""What each API key may use, and the counters that hold it to that: checked in memory, per request.

Rules:
- A key's ``KeyLimits`` are requests per minute (``rpm``), tokens per minute (``tpm``: prompt +
  completion, as the backend reported them), requests in flight (``max_concurrent``), tokens per
  calendar month (UTC, ``monthly_tokens``) and the models it may use (``models``: exact ids or
  shell-style patterns such as ``llama3.*``). ``None`` means "the organisation's default" (server
  settings ``key_default_*``); ``0`` (or an empty model list) means "no limit for this key", even
  when there is a default. ``effective`` is the one place that merges the two.
- ``Limiter.admit`` decides before a request is routed, with no I/O: a model outside the
  allow-list is 403 (``ModelNotAllowed``: the model exists, this key may not use it); a spent
  monthly quota, an empty request or token budget, or a full set of concurrent requests is 429
  (``RateLimited``) with ``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers. Every check is
  made before any counter moves, so a refused request costs the key nothing.
- Requests and tokens per minute count what the key used in the trailing 60 seconds (one-second
  slots): a request is admitted while that count is below the limit. A request's tokens are known
  only when it ends and are charged then, so requests already running when the budget runs out
  may take the count past the limit (the key then waits longer); the monthly quota works the
  same way. ``Retry-After`` says when enough of the trailing minute has expired.
- Every admitted request holds a ``Lease``; ``Lease.finish(tokens)`` (called exactly once, where
  the request's usage row is written) returns its concurrency slot and charges its tokens.
  ``finish`` is idempotent.
- Counters live in this process. At start-up ``seed`` loads the current month's tokens and the
  last minute's requests and tokens per key from the usage records, so a restart neither resets a
  quota nor hands out a fresh minute. With several control-plane replicas each would hold its own
  counters; the replicas issue moves ``Limiter``'s state behind the same interface onto the shared
  bus (docs/security.md, "Limits per key").
- Headers on a successful answer: ``x-ratelimit-limit/remaining/reset-requests`` and ``-tokens``
  for a key with ``rpm`` / ``tpm``, and ``x-pendra-quota-limit/remaining/reset-tokens`` for a
  key with a monthly quota. Reset times are durations as OpenAI writes them (``1s``, ``6m0s``,
  ``20ms``); the quota's reset is the ISO time the month ends.
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pendra.errors import Forbidden, InvalidRequest, PendraError

# Bounds on each limit (inclusive); 0 always means "no limit".
BOUNDS: dict[str, tuple[int, int]] = {
    "rpm": (0, 10_000_000),
    "tpm": (0, 10_000_000_000),
    "max_concurrent": (0, 100_000),
    "monthly_tokens": (0, 10**15),
}
MAX_MODEL_PATTERNS = 100
MODEL_PATTERN_MAX_CHARS = 200
# Model ids (names.py) plus the shell wildcards * ? [ ].
_PATTERN = re.compile(r"^[A-Za-z0-9._:/@*?\[\]-]+$")
NUMERIC = tuple(BOUNDS)
LIMIT_FIELDS = (*NUMERIC, "models")


class RateLimited(PendraError):
    status = 429
    kind = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, headers: dict[str, str],
                 code: str | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s, code=code)
        self.headers = headers


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"


@dataclass(frozen=True)
class KeyLimits:
    """One key's limits as stored (None: the default applies; 0 or (): no limit)."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    monthly_tokens: int | None = None
    models: tuple[str, ...] | None = None

    def effective(self, defaults: KeyLimits) -> KeyLimits:
        """The limits that apply: this key's own, else the default; 0 / () become None."""
        merged = {name: (own if (own := getattr(self, name)) is not None
                         else getattr(defaults, name))
                  for name in (*NUMERIC, "models")}
        return KeyLimits(**{name: value or None for name, value in merged.items()})

    def allows(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (*NUMERIC, "models")} | {
            "models": list(self.models) if self.models is not None else None}

    def describe(self) -> str:
        """A short human summary ("60 rpm, 10k tpm, models llama3.*") or "none"."""
        parts = []
        for name, unit in (("rpm", "rpm"), ("tpm", "tpm"), ("max_concurrent", "concurrent"),
                           ("monthly_tokens", "tokens/month")):
            value = getattr(self, name)
            if value:
                parts.append(f"{value:,} {unit}")
        if self.models:
            parts.append("models " + ", ".join(self.models))
        return "; ".join(parts) or "none"


def parse_limits(values: Mapping[str, Any], *, where: str = "") -> KeyLimits:
    """``KeyLimits`` from loose values (API body, CLI options, config, store columns), checked
    against ``BOUNDS``; InvalidRequest names the field. Missing names stay None."""
    out: dict[str, Any] = {}
    for name in NUMERIC:
        raw = values.get(name)
        if raw is None or raw == "":
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise InvalidRequest(f"{where}{name} must be a whole number", param=name)
        try:
            value = int(raw)
        except ValueError:
            raise InvalidRequest(f"{where}{name} must be a whole number, not {str(raw)[:40]!r}",
                                 param=name) from None
        low, high = BOUNDS[name]
        if not low <= value <= high:
            raise InvalidRequest(f"{where}{name} must be between {low} and {high:,} "
                                 "(0 = no limit)", param=name)
        out[name] = value
    raw_models = values.get("models")
    if raw_models is not None:
        out["models"] = parse_models(raw_models, where=where)
    return KeyLimits(**out)


def parse_models(raw: Any, *, where: str = "") -> tuple[str, ...]:
    """An allow-list from a list or a comma-separated string; () allows every model."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise InvalidRequest(f"{where}models must be a list of model ids or patterns",
                             param="models")
    patterns = tuple(dict.fromkeys(str(p).strip() for p in items if str(p).strip()))
    if len(patterns) > MAX_MODEL_PATTERNS:
        raise InvalidRequest(f"{where}models may name at most {MAX_MODEL_PATTERNS} ids or "
                             "patterns", param="models")
    for pattern in patterns:
        if len(pattern) > MODEL_PATTERN_MAX_CHARS or not _PATTERN.match(pattern):
            raise InvalidRequest(f"{where}models: {pattern[:60]!r} is not a model id or pattern "
                                 "(letters, digits, . _ : / @ - and the wildcards * ? [ ])",
                                 param="models")
    return patterns


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes one: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest):d}s"


def month_start(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(when: datetime) -> datetime:
    start = month_start(when)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(
        month=start.month + 1)


class _Window:
    """What was used in the trailing minute, in one-second slots (bounded memory at any rate)."""

    __slots__ = ("_slots",)
    SPAN_S = 60

    def __init__(self) -> None:
        self._slots: dict[int, int] = {}  # whole second -> amount used in it

    def _expire(self, now: float) -> None:
        oldest = int(now) - self.SPAN_S + 1
        for second in [s for s in self._slots if s < oldest]:
            del self._slots[second]

    def total(self, now: float) -> int:
        self._expire(now)
        return sum(self._slots.values())

    def add(self, now: float, amount: int) -> None:
        if amount:
            second = int(now)
            self._slots[second] = self._slots.get(second, 0) + amount

    def wait_below(self, now: float, limit: int) -> float:
        """Seconds until the trailing minute's total is below ``limit`` again."""
        total = self.total(now)
        for second in sorted(self._slots):
            if total < limit:
                break
            total -= self._slots[second]
            wait = second + self.SPAN_S - now
            if total < limit:
                return max(wait, 0.001)
        return 0.0 if total < limit else float(self.SPAN_S)

    def wait_empty(self, now: float) -> float:
        """Seconds until nothing of the trailing minute is left (the limit is whole again)."""
        self._expire(now)
        return max(0.0, max(self._slots) + self.SPAN_S - now) if self._slots else 0.0


@dataclass
class _KeyState:
    requests: _Window = field(default_factory=_Window)
    tokens: _Window = field(default_factory=_Window)
    in_flight: int = 0
    month: datetime | None = None
    month_tokens: int = 0


@dataclass
class Lease:
    """An admitted request's hold on its key's counters (see ``Limiter.admit``)."""

    limiter: Limiter | None
    key_id: str
    headers: dict[str, str] = field(default_factory=dict)
    counts_concurrency: bool = False
    done: bool = False

    def finish(self, tokens: int) -> None:
        """Return the slot and charge ``tokens``; only the first call counts."""
        if self.done or self.limiter is None:
            return
        self.done = True
        self.limiter._finish(self, max(0, tokens))


NO_LEASE = Lease(None, "")


class Limiter:
    """Every key's counters in this process."""

    def __init__(self, defaults: KeyLimits | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.defaults = defaults or KeyLimits()
        self._clock = clock
        self._wall = wall
        self._keys: dict[str, _KeyState] = {}

    def effective(self, limits: KeyLimits) -> KeyLimits:
        return limits.effective(self.defaults)

    def admit(self, key_id: str | None, name: str, limits: KeyLimits, model: str) -> Lease:
        """Admit a request of key ``key_id`` (called ``name`` in messages) for ``model``, or
        raise ModelNotAllowed / RateLimited. No I/O."""
        if key_id is None:
            return NO_LEASE
        own = self.effective(limits)
        if not own.allows(model):
            raise ModelNotAllowed(f"API key '{name}' may not use model '{model}'; it may use: "
                                  f"{', '.join(own.models or ())}", param="model")
        if not (own.rpm or own.tpm or own.max_concurrent or own.monthly_tokens):
            return NO_LEASE
        now, today = self._clock(), self._wall()
        state = self._keys.setdefault(key_id, _KeyState())
        refusals: list[tuple[str, float, str | None]] = []  # what, seconds to wait, code
        if own.monthly_tokens:
            self._roll_month(state, today)
            if state.month_tokens >= own.monthly_tokens:
                ends = next_month(today)
                refusals.append((f"its monthly quota of {own.monthly_tokens:,} tokens (used up "
                                 f"until {ends:%Y-%m-%d %H:%M} UTC)",
                                 (ends - today).total_seconds(), "insufficient_quota"))
        if own.rpm and state.requests.total(now) >= own.rpm:
            refusals.append((f"{own.rpm:,} requests per minute",
                             state.requests.wait_below(now, own.rpm), None))
        if own.tpm and state.tokens.total(now) >= own.tpm:
            refusals.append((f"{own.tpm:,} tokens per minute",
                             state.tokens.wait_below(now, own.tpm), None))
        if own.max_concurrent and state.in_flight >= own.max_concurrent:
            refusals.append((f"{own.max_concurrent:,} requests at a time", 1.0, None))
        if refusals:
            what, wait, code = max(refusals, key=lambda r: r[1])  # the one that lasts longest
            raise RateLimited(f"API key '{name}' reached its limit of {what}; try again in "
                              f"{duration(wait)}", retry_after_s=max(wait, 0.001),
                              headers=self._headers(own, state, now, today), code=code)
        lease = Lease(self, key_id)
        state.requests.add(now, 1)
        if own.max_concurrent:
            state.in_flight += 1
            lease.counts_concurrency = True
        lease.headers = self._headers(own, state, now, today)
        return lease

    @staticmethod
    def _headers(own: KeyLimits, state: _KeyState, now: float,
                 today: datetime) -> dict[str, str]:
        headers = {}
        if own.rpm:
            headers |= {"x-ratelimit-limit-requests": str(own.rpm),
                        "x-ratelimit-remaining-requests": str(max(
                            0, own.rpm - state.requests.total(now))),
                        "x-ratelimit-reset-requests": duration(state.requests.wait_empty(now))}
        if own.tpm:
            headers |= {"x-ratelimit-limit-tokens": str(own.tpm),
                        "x-ratelimit-remaining-tokens": str(max(
                            0, own.tpm - state.tokens.total(now))),
                        "x-ratelimit-reset-tokens": duration(state.tokens.wait_empty(now))}
        if own.monthly_tokens:
            headers |= {"x-pendra-quota-limit-tokens": str(own.monthly_tokens),
                        "x-pendra-quota-remaining-tokens": str(max(
                            0, own.monthly_tokens - state.month_tokens)),
                        "x-pendra-quota-reset-tokens": next_month(today).isoformat(
                            timespec="seconds")}
        return headers

    def _roll_month(self, state: _KeyState, today: datetime) -> None:
        start = month_start(today)
        if state.month != start:
            state.month, state.month_tokens = start, 0

    def _finish(self, lease: Lease, tokens: int) -> None:
        state = self._keys.get(lease.key_id)
        if state is None:
            return
        if lease.counts_concurrency:
            state.in_flight = max(0, state.in_flight - 1)
        if tokens:
            state.tokens.add(self._clock(), tokens)
            self._roll_month(state, self._wall())
            state.month_tokens += tokens

    def in_flight(self, key_id: str) -> int:
        state = self._keys.get(key_id)
        return state.in_flight if state else 0

    def seed(self, *, month_tokens: Mapping[str, int],
             last_minute: Mapping[str, tuple[int, int]],
             limits_of: Callable[[str], KeyLimits | None]) -> None:
        """Counters from the usage records at start-up: this month's tokens per key, and the
        requests and tokens of the last minute (counted as used now: they expire a minute after
        the start, never sooner than they would have)."""
        now, today = self._clock(), self._wall()
        for key_id in set(month_tokens) | set(last_minute):
            if limits_of(key_id) is None:
                continue
            state = self._keys.setdefault(key_id, _KeyState())
            state.month, state.month_tokens = month_start(today), month_tokens.get(key_id, 0)
            requests, tokens = last_minute.get(key_id, (0, 0))
            state.requests.add(now, requests)
            state.tokens.add(now, tokens)

    def forget(self, live: Iterable[str]) -> None:
        """Drop the counters of keys not in ``live`` (revoked) that hold no request."""
        keep = set(live)
        for key_id in [k for k, s in self._keys.items() if k not in keep and not s.in_flight]:
            del self._keys[key_id]


"""The per-key limiter as pure logic, on a clock the test moves (server/limits.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pendra.errors import InvalidRequest
from pendra.server.limits import (KeyLimits, Limiter, ModelNotAllowed, RateLimited, duration,
                                  next_month, parse_limits)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = datetime(2026, 12, 31, 23, 59, 0, tzinfo=UTC)

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def limiter(clock: Clock, defaults: KeyLimits | None = None) -> Limiter:
    return Limiter(defaults, clock=lambda: clock.now, wall=lambda: clock.wall)


def test_requests_per_minute_allow_exactly_the_limit_in_a_trailing_minute(clock: Clock) -> None:
    limits = limiter(clock)
    own = KeyLimits(rpm=3)
    leases = [limits.admit("k", "ci", own, "m") for _ in range(3)]
    assert [lease.headers["x-ratelimit-remaining-requests"] for lease in leases] == ["2", "1", "0"]
    with pytest.raises(RateLimited) as refused:
        limits.admit("k", "ci", own, "m")
    assert refused.value.status == 429 and refused.value.kind == "rate_limit_error"
    assert refused.value.retry_after_s == pytest.approx(60.0)  # when the first three expire
    assert "3 requests per minute" in refused.value.message and "'ci'" in refused.value.message
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.value.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.tick(59)
    with pytest.raises(RateLimited):
        limits.admit("k", "ci", own, "m")
    clock.tick(1)
    for _ in range(3):
        limits.admit("k", "ci", own, "m")
    with pytest.raises(RateLimited):
        limits.admit("k", "ci", own, "m")


def test_retry_after_waits_only_for_enough_of_the_minute_to_expire(clock: Clock) -> None:
    limits = limiter(clock)
    own = KeyLimits(rpm=2)
    limits.admit("k", "ci", own, "m")
    clock.tick(30)
    limits.admit("k", "ci", own, "m")
    with pytest.raises(RateLimited) as refused:
        limits.admit("k", "ci", own, "m")
    assert refused.value.retry_after_s == pytest.approx(30.0)  # the first one's second expires


def test_a_refused_request_costs_nothing(clock: Clock) -> None:
    limits = limiter(clock)
    own = KeyLimits(rpm=5, max_concurrent=1)
    held = limits.admit("k", "ci", own, "m")
    for _ in range(10):
        with pytest.raises(RateLimited):
            limits.admit("k", "ci", own, "m")  # refused for concurrency: no request charged
    held.finish(0)
    lease = limits.admit("k", "ci", own, "m")
    assert lease.headers["x-ratelimit-remaining-requests"] == "3"


def test_concurrency_counts_leases_until_finished_once(clock: Clock) -> None:
    limits = limiter(clock)
    own = KeyLimits(max_concurrent=2)
    first, second = limits.admit("k", "ci", own, "m"), limits.admit("k", "ci", own, "m")
    with pytest.raises(RateLimited, match="2 requests at a time"):
        limits.admit("k", "ci", own, "m")
    first.finish(0)
    first.finish(0)  # idempotent: frees one slot, not two
    third = limits.admit("k", "ci", own, "m")
    with pytest.raises(RateLimited):
        limits.admit("k", "ci", own, "m")
    assert limits.in_flight("k") == 2
    second.finish(0)
    third.finish(0)
    assert limits.in_flight("k") == 0


def test_tokens_per_minute_charge_what_was_used(clock: Clock) -> None:
    limits = limiter(clock)
    own = KeyLimits(tpm=100)
    for _ in range(4):  # 30 tokens each: admitted while the minute's total is below 100
        limits.admit("k", "ci", own, "m").finish(30)
    with pytest.raises(RateLimited, match="100 tokens per minute") as refused:
        limits.admit("k", "ci", own, "m")
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.value.retry_after_s == pytest.approx(60.0)
    clock.tick(60)
    lease = limits.admit("k", "ci", own, "m")
    assert lease.headers["x-ratelimit-remaining-tokens"] == "100"


def test_monthly_quota_ends_with_the_month(clock: Clock) -> None:
    limits = limiter(clock)
    own = KeyLimits(monthly_tokens=50)
    lease = limits.admit("k", "ci", own, "m")
    assert lease.headers["x-pendra-quota-remaining-tokens"] == "50"
    assert lease.headers["x-pendra-quota-reset-tokens"] == "2027-01-01T00:00:00+00:00"
    lease.finish(50)
    with pytest.raises(RateLimited) as refused:
        limits.admit("k", "ci", own, "m")
    assert refused.value.code == "insufficient_quota"
    assert refused.value.retry_after_s == pytest.approx(60)  # until midnight, new year
    clock.tick(61)
    assert limits.admit("k", "ci", own, "m").headers["x-pendra-quota-remaining-tokens"] == "50"


def test_allow_list_refuses_other_models_with_403(clock: Clock) -> None:
    limits = limiter(clock)
    own = KeyLimits(models=("llama3.*", "qwen3:8b"))
    limits.admit("k", "ci", own, "llama3.2:latest")
    limits.admit("k", "ci", own, "qwen3:8b")
    with pytest.raises(ModelNotAllowed) as refused:
        limits.admit("k", "ci", own, "qwen3:14b")
    assert refused.value.status == 403 and refused.value.param == "model"
    assert "may not use model 'qwen3:14b'" in refused.value.message


def test_defaults_apply_unless_the_key_sets_its_own_or_zero(clock: Clock) -> None:
    limits = limiter(clock, KeyLimits(rpm=1, models=("a",)))
    limits.admit("k1", "one", KeyLimits(), "a")
    with pytest.raises(RateLimited):
        limits.admit("k1", "one", KeyLimits(), "a")
    with pytest.raises(ModelNotAllowed):
        limits.admit("k2", "two", KeyLimits(), "b")
    unlimited = KeyLimits(rpm=0, models=())
    for _ in range(5):
        assert limits.admit("k3", "three", unlimited, "b").headers == {}


def test_seed_restores_the_month_and_the_last_minute(clock: Clock) -> None:
    limits = limiter(clock)
    own = KeyLimits(rpm=10, tpm=1000, monthly_tokens=5000)
    limits.seed(month_tokens={"k": 4990}, last_minute={"k": (9, 200)},
                limits_of=lambda key_id: own if key_id == "k" else None)
    lease = limits.admit("k", "ci", own, "m")
    assert lease.headers["x-ratelimit-remaining-requests"] == "0"
    assert lease.headers["x-ratelimit-remaining-tokens"] == "800"
    assert lease.headers["x-pendra-quota-remaining-tokens"] == "10"


def test_parse_limits_checks_bounds_and_names_the_field() -> None:
    assert parse_limits({"rpm": "60", "models": "llama3.*, qwen3:8b"}) == KeyLimits(
        rpm=60, models=("llama3.*", "qwen3:8b"))
    with pytest.raises(InvalidRequest) as bad:
        parse_limits({"tpm": -1})
    assert bad.value.param == "tpm" and "between 0 and" in bad.value.message
    with pytest.raises(InvalidRequest, match="whole number"):
        parse_limits({"max_concurrent": "many"})
    with pytest.raises(InvalidRequest) as bad:
        parse_limits({"models": ["ok", "no spaces allowed"]})
    assert bad.value.param == "models"


def test_durations_are_written_as_openai_does() -> None:
    assert duration(0.02) == "20ms"
    assert duration(1) == "1s"
    assert duration(1.5) == "1.5s"
    assert duration(360) == "6m0s"
    assert next_month(datetime(2026, 12, 8, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)

"""Password attempts are throttled per address and globally, cost the API nothing, and are logged;
signing out survives a restart."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from pendra.server.serve import serving
from pendra.server.sessions import COOKIE_NAME
from pendra.server.throttle import SignInThrottle, SignInThrottled

from .conftest import HTTP_TIMEOUT_S, PASSWORD, Console, console_app, sign_in
from suite_env import WAIT

# An authenticated API call normally takes milliseconds; a sign-in flood must not push it past
# this (on the unthrottled code it took 21 s). A ceiling, not a benchmark.
API_CEILING_S = 3.0 * WAIT
WRONG = "not the password at all"


# --- the throttle itself ---------------------------------------------------------------------------


def refused(throttle: SignInThrottle, client: str, now: float) -> int | None:
    """The Retry-After of a refused attempt, or None when it was admitted."""
    try:
        throttle.admit(client, now)
    except SignInThrottled as exc:
        return exc.retry_after_s
    return None


def test_an_address_gets_its_burst_then_waits_for_the_refill() -> None:
    """Ten attempts a minute per address: the eleventh waits ~6 s, others are not held up."""
    throttle = SignInThrottle(per_address_per_minute=10, global_per_second=100)
    assert [refused(throttle, "10.0.0.1", 0.0) for _ in range(10)] == [None] * 10
    assert refused(throttle, "10.0.0.1", 0.0) == 6
    assert refused(throttle, "10.0.0.2", 0.0) is None
    assert refused(throttle, "10.0.0.1", 6.0) is None
    assert refused(throttle, "10.0.0.1", 6.0) == 6


def test_the_global_bucket_holds_many_addresses() -> None:
    """Two attempts a second in total (five seconds' burst), however many addresses try; an
    attempt refused globally costs its address nothing."""
    throttle = SignInThrottle(per_address_per_minute=10, global_per_second=2)
    outcomes = [refused(throttle, f"10.1.0.{n}", 0.0) for n in range(50)]
    assert outcomes.count(None) == 10 and set(outcomes[10:]) == {1}
    assert refused(throttle, "10.1.0.49", 0.5) is None, "its refused attempt cost it no token"


def test_refusals_are_logged_once_per_run_and_addresses_clipped(
        caplog: pytest.LogCaptureFixture) -> None:
    """A run of refusals logs one line, with the address clipped; the table stays bounded."""
    throttle = SignInThrottle(per_address_per_minute=1, global_per_second=100, table_max=8)
    long_address = "a" * 500
    for _ in range(20):
        refused(throttle, long_address, 0.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and len(lines[0]) < 200
    for n in range(100):
        refused(throttle, f"10.2.0.{n}", 0.0)
    assert len(throttle._addresses) == 8


# --- on the wire -----------------------------------------------------------------------------------


async def test_parallel_attempts_from_one_address_get_429(
        console: Console, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    """Sixty wrong passwords sent at once from one address: at most the burst is checked (401),
    the rest are refused with 429 and Retry-After — a page for the form, JSON for API callers —
    and none fails with a 500. Each failure is logged with the address, never the password."""
    caplog.set_level(logging.INFO)

    async def attempt(n: int) -> httpx.Response:
        accept = "application/json" if n % 2 else "text/html"
        return await client.post("/sign-in", data={"name": "admin", "password": WRONG}, headers={"Accept": accept})

    replies = await asyncio.gather(*(attempt(n) for n in range(60)))
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) <= 12 and statuses.count(429) >= 48
    for reply in replies:
        if reply.status_code == 429:
            assert int(reply.headers["retry-after"]) >= 1
            if reply.headers["content-type"].startswith("application/json"):
                assert reply.json()["error"]["type"] == "rate_limit_error"
            else:
                assert "Too many attempts" in reply.text
    failures = [r.getMessage() for r in caplog.records if "failed console sign-in" in r.getMessage()]
    assert len(failures) == statuses.count(401)
    assert all("127.0.0.1" in line for line in failures)
    assert not any(WRONG in r.getMessage() for r in caplog.records)
    # The right password from this address waits its turn too: the throttle counts attempts.
    assert (await client.post("/sign-in", data={"name": "admin", "password": PASSWORD})).status_code == 429


async def test_a_flood_from_many_addresses_is_held_globally_and_the_api_keeps_answering(
        console: Console, client: httpx.AsyncClient) -> None:
    """150 wrong passwords at once from 150 addresses (through the trusted proxy's
    X-Forwarded-For): the global throttle refuses most of them, none is a 500, and an
    authenticated /v1/models keeps answering promptly meanwhile."""
    _, raw = await console.app.state.keys.create("api")
    api_latencies: list[float] = []
    flood_done = asyncio.Event()

    async def api_calls() -> None:
        async with httpx.AsyncClient(base_url=console.base_url, timeout=HTTP_TIMEOUT_S,
                                     headers={"Authorization": f"Bearer {raw}"}) as api:
            while not flood_done.is_set() or not api_latencies:
                started = time.monotonic()
                reply = await api.get("/v1/models")
                api_latencies.append(time.monotonic() - started)
                assert reply.status_code == 200, reply.text
                await asyncio.sleep(0.02)

    async def flood() -> list[httpx.Response]:
        try:
            return await asyncio.gather(*(
                client.post("/sign-in", data={"name": "admin", "password": WRONG},
                            headers={"X-Forwarded-For": f"10.9.{n // 250}.{n % 250}"})
                for n in range(150)))
        finally:
            flood_done.set()

    caller = asyncio.create_task(api_calls())
    replies = await flood()
    await caller
    assert max(api_latencies) < API_CEILING_S, api_latencies
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {401, 429}
    assert statuses.count(429) >= 100


async def test_a_signed_out_cookie_stays_refused_after_a_restart(console: Console,
                                                                 client: httpx.AsyncClient) -> None:
    """Sign out, start the app again on the same store and home: the old cookie opens nothing."""
    admin = await sign_in(client)
    cookie = admin.http.cookies[COOKIE_NAME]
    assert (await admin.http.post("/sign-out", data=admin.form())).status_code == 303
    restarted = console_app(console.settings)
    async with serving(restarted, "127.0.0.1", 0) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=HTTP_TIMEOUT_S) as again:
            again.cookies.set(COOKIE_NAME, cookie)
            assert (await again.get("/models")).status_code == 303
            fresh = await sign_in(again)
            assert (await fresh.http.get("/models")).status_code == 200

"""The registry's handling of a backend that goes down: the re-probe schedule (pure), and, against
the emulator as a real process, marking down at once, telling subscribers, and serving again within
seconds of the backend's return although the refresh tick is far away."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from suite_env import ONLY_OLLAMA
from pendra.backends.registry import REPROBE_FIRST_S, BackendRegistry, reprobe_delay_s
from pendra.config import WorkerSettings
from pendra.errors import BackendUnavailable
from pendra.testing.servers import run_emulator
from polling import eventually

CHAT = "llama3.2:latest"
# Far longer than any wait below: only the re-probe schedule can explain a prompt return.
SLOW_TICK_S = 300.0


def settings(endpoint: str, **changes: object) -> WorkerSettings:
    base = WorkerSettings(server_ws_url="ws://127.0.0.1:9", private_key="", worker_id="wrk-test",
                          worker_name="alpha", models=None, max_concurrent=1,
                          ollama_endpoint=endpoint, refresh_interval_s=SLOW_TICK_S,
                          ollama_num_ctx_cap=0, heartbeat_interval_s=1, heartbeat_timeout_s=3,
                          backends_disabled=ONLY_OLLAMA)
    return replace(base, **changes)  # type: ignore[arg-type]


# --- the schedule -------------------------------------------------------------------------------------


def test_reprobe_starts_at_about_a_second_and_backs_off_to_the_tick() -> None:
    """The first re-probe comes after a second; each wait grows, gently (a restart of a few seconds
    is still noticed within about two), and never beyond the refresh interval."""
    delays = [reprobe_delay_s(n, 10.0) for n in range(40)]
    assert delays[0] == REPROBE_FIRST_S == 1.0
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    assert sum(delays[:4]) >= 4.0 and delays[4] <= 2.5  # ~5 s of outage: still probed every ~2 s
    assert max(delays) == delays[-1] == 10.0
    assert reprobe_delay_s(10_000, 10.0) == 10.0  # a week-long outage does not overflow
    assert reprobe_delay_s(0, 0.5) == 0.5  # a refresh interval under a second caps the first too
    assert reprobe_delay_s(-1, 10.0) == 1.0


# --- against the emulator ------------------------------------------------------------------------------


async def test_a_refused_backend_is_down_at_once_and_back_within_seconds() -> None:
    """After a request finds Ollama refusing connections, ``recheck`` marks it down at once (its
    models leave the inventory, and asking for one says "retry after", not "not served"); when
    Ollama returns, the re-probe finds it within seconds though the next tick is minutes away, and
    the change is announced."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url))
        announced: list[set[str]] = []

        async def on_change() -> None:
            announced.append({m.id for m in registry.models()})

        stop = asyncio.Event()
        try:
            await registry.refresh()
            assert CHAT in {m.id for m in registry.models()}
            async with asyncio.TaskGroup() as group:
                group.create_task(registry.run(stop, on_change))
                await emu.stop()
                retry_after = await registry.recheck("ollama")
                assert retry_after is not None and 1 <= retry_after <= 2
                [status] = [s for s in registry.statuses() if s.kind == "ollama"]
                assert not status.verified and registry.models() == []
                with pytest.raises(BackendUnavailable, match="not answering") as caught:
                    registry.backend_for(CHAT)
                assert caught.value.retry_after_s is not None and caught.value.retry_after_s >= 1
                # the withdrawal went out without a tick
                await eventually(lambda: announced == [set()], timeout_s=5)

                await emu.start()
                await eventually(lambda: registry.statuses()[0].verified and len(announced) >= 2,
                                 timeout_s=5)
                assert CHAT in announced[-1]
                assert registry.backend_for(CHAT)[1].id == CHAT
                stop.set()
        finally:
            stop.set()
            await registry.aclose()


async def test_recheck_of_a_backend_that_answers_changes_nothing() -> None:
    """A request's own transport failure does not take down a backend that still answers."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url))
        heard: list[tuple[str, str]] = []
        registry.subscribe(lambda kind, reason: heard.append((kind, reason)))
        try:
            await registry.refresh()
            assert await registry.recheck("ollama") is None
            assert registry.statuses()[0].verified and heard == []
        finally:
            await registry.aclose()


async def test_subscribers_hear_at_once_when_a_tick_finds_the_backend_down() -> None:
    """A tick whose verification fails tells every subscriber (kind and reason) before it returns;
    an unsubscribed one hears nothing."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url))
        heard: list[tuple[str, str]] = []
        gone: list[tuple[str, str]] = []
        registry.subscribe(lambda kind, reason: heard.append((kind, reason)))
        unsubscribe = registry.subscribe(lambda kind, reason: gone.append((kind, reason)))
        unsubscribe()
        try:
            await registry.refresh()
            await emu.stop()
            assert await registry.refresh() is True
            [(kind, reason)] = heard
            assert kind == "ollama" and emu.base_url in reason
            assert gone == []
            assert registry.retry_after_s("ollama") == 1.0
        finally:
            await registry.aclose()

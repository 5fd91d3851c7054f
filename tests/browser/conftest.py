"""One real deployment per module, and a headless Chromium to drive its console.

``fleet`` is a ``pendra up`` process (the console script from this venv, PENDRA_HOME in a temporary
folder, port 0) whose local worker talks to an Ollama emulator, plus a second emulator for a worker
the tests add through the console. Its admin password and first API key are read from what it prints
on first start, exactly as a person would. ``page`` is a Chromium tab (Debian's /usr/bin/chromium,
never a downloaded build) signed in to that console; any script error on a page fails the test.

Everything here lives for the module (one start-up for the whole suite keeps it well under two
minutes); the tests in a module run in order and build on each other, like a person's session.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from polling import eventually
from suite_env import WAIT
from playwright.async_api import Browser, Page, async_playwright

from pendra.testing.servers import EmulatorProcess, run_emulator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
PENDRA = Path(sys.executable).with_name("pendra")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# A laptop screen.
VIEWPORT = {"width": 1440, "height": 900}
# Start-up of `pendra up` (migrations, enrolment, first discovery) on a slow machine.
START_S = 30  # scaled by WAIT where it is waited on
STOP_TIMEOUT_S = 15 * WAIT
# Playwright waits (milliseconds) for things that happen live: installs, connections, refreshes.
LIVE_TIMEOUT_MS = 20_000 * WAIT
# Discovery runs this often in the workers under test, so new models show up promptly.
REFRESH_INTERVAL_S = "0.5"


@dataclass
class Process:
    """A child process we started, with everything it printed."""

    proc: asyncio.subprocess.Process
    name: str
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    async def wait_for_line(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The first printed line matching ``pattern``, within ``timeout_s`` (scaled by WAIT)."""
        regex = re.compile(pattern)

        def printed() -> re.Match[str] | None:
            for line in self.lines:
                if found := regex.search(line):
                    return found
            if self.proc.returncode is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n"
                                     f"{self.output()}")
            return None

        return await eventually(printed, timeout_s=timeout_s, interval_s=0.05,
                                what=f"a line matching {pattern!r} from {self.name}")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            await self.reader


async def start(name: str, args: list[str], env: dict[str, str]) -> Process:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    started = Process(proc, name)

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            started.lines.append(raw.decode("utf-8", "replace").rstrip())

    started.reader = asyncio.create_task(read(), name=f"read:{name}")
    return started


def child_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PENDRA_", "OLLAMA_", "GPU_WORKER_", "WORKER_", "APP_SERVER_"))}
    return env | {"PENDRA_HOME": str(home), "PENDRA_LOG_LEVEL": "WARNING", "NO_COLOR": "1",
                  "COLUMNS": "400", "REFRESH_INTERVAL": REFRESH_INTERVAL_S} | extra


@dataclass
class Fleet:
    base_url: str
    admin_password: str
    api_key: str
    up: Process
    local_emulator: EmulatorProcess
    spare_emulator: EmulatorProcess
    tmp: Path
    workers: list[Process] = field(default_factory=list)

    async def start_worker(self, name: str, env: dict[str, str]) -> Process:
        home = self.tmp / f"worker-{len(self.workers)}"
        home.mkdir(mode=0o700)
        worker = await start(name, [str(PENDRA), "worker"], child_env(
            home, OLLAMA_ENDPOINT=self.spare_emulator.base_url, **env))
        self.workers.append(worker)
        return worker


@pytest.fixture(scope="module")
def fleet_env() -> dict[str, str]:
    """Extra environment for the module's `pendra up` (a module overrides this fixture to start
    its fleet with, say, a PUBLIC_URL)."""
    return {}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory,
                fleet_env: dict[str, str]) -> AsyncIterator[Fleet]:
    tmp = tmp_path_factory.mktemp("browser")
    home = tmp / "up-home"
    home.mkdir(mode=0o700)
    async with run_emulator() as local, run_emulator() as spare:
        up = await start("pendra up", [str(PENDRA), "up", "--port", "0"],
                         child_env(home, OLLAMA_ENDPOINT=local.base_url, **fleet_env))
        fleet = None
        try:
            url = (await up.wait_for_line(r"Pendra is running at (http://\S+)",
                                          START_S)).group(1)
            password = (await up.wait_for_line(r"Admin password:\s+(\S+)", START_S))
            key = await up.wait_for_line(r"API key:\s+(pdr_sk_\S+)", START_S)
            fleet = Fleet(url.rstrip("/"), password.group(1), key.group(1), up, local, spare, tmp)
            yield fleet
        finally:
            for worker in (fleet.workers if fleet else []):
                await worker.stop()
            await up.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Tab:
    page: Page
    errors: list[str]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tab(browser: Browser, fleet: Fleet) -> AsyncIterator[Tab]:
    """One tab for the module, like one person's session (it is signed in by the first test)."""
    context = await browser.new_context(viewport=VIEWPORT, base_url=fleet.base_url)
    context.set_default_timeout(LIVE_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"script error: {exc}"))
    try:
        yield Tab(page, errors)
    finally:
        await context.close()


@pytest.fixture
def page(tab: Tab) -> Iterator[Page]:
    """The module's tab; a script error on any page during the test fails it."""
    tab.errors.clear()
    yield tab.page
    assert not tab.errors, "\n".join(tab.errors)


async def screenshot(page: Page, name: str) -> None:
    """Save the whole page as artifacts/screenshots/<name>.png, from the top."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

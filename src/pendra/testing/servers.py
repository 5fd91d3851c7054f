"""Start test servers as real child processes and never leak them.

``start_process`` runs a command that prints a ``READY <url>`` line once it accepts connections;
``run_emulator`` wraps the Ollama emulator with its control surface (``/_emulator/*``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChildProcess:
    """A child that announced ``READY <url>``; its stderr goes to a log file."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        # What the child printed on stdout before its ready line (e.g. first-start secrets).
        self.before_ready: list[str] = []
        self.log = Path(tempfile.mkstemp(prefix="pendra-child-", suffix=".log")[1])

    async def start(self, ready_prefix: str = "READY ", timeout_s: float = READY_TIMEOUT_S) -> str:
        sink = self.log.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.args, stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=sink,
                env=self.env, start_new_session=True)
        finally:
            sink.close()
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    raw = await self.process.stdout.readline()
                    if not raw:
                        raise RuntimeError(f"{self.args[:3]} exited before it was ready:\n{self.tail()}")
                    line = raw.decode(errors="replace").strip()
                    if line.startswith(ready_prefix):
                        self.url = line[len(ready_prefix):].strip()
                        return self.url
                    self.before_ready.append(line)
        except BaseException:
            await self.kill()
            raise

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await self.process.wait()


@asynccontextmanager
async def start_process(args: Sequence[str], *, env: dict[str, str] | None = None,
                        ready_prefix: str = "READY ",
                        timeout_s: float = READY_TIMEOUT_S) -> AsyncIterator[ChildProcess]:
    child = ChildProcess(args, env)
    await child.start(ready_prefix, timeout_s)
    try:
        yield child
    finally:
        await child.kill()
        child.log.unlink(missing_ok=True)


class EmulatorProcess:
    """A running emulator and its control surface."""

    def __init__(self, args: list[str]) -> None:
        self._args = args
        self.child = ChildProcess(args)
        self.base_url = ""
        self.port = 0

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        return self.child.process

    async def start(self) -> None:
        """(Re)start on the same port as before (port 0 the first time)."""
        args = list(self._args)
        if self.port:
            args[args.index("--port") + 1] = str(self.port)
            await self.child.kill()  # a restart: the old process and its log go
            self.child.log.unlink(missing_ok=True)
        self.child = ChildProcess(args)
        for attempt in range(50):
            try:
                self.base_url = await self.child.start()
                break
            except RuntimeError:
                if not self.port or attempt == 49:
                    raise
                await asyncio.sleep(0.1)  # the old socket may still be closing
        self.port = int(self.base_url.rsplit(":", 1)[1])

    async def stop(self) -> None:
        await self.child.stop()

    async def kill(self) -> None:
        await self.child.kill()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            response = await http.request(method, path, **kwargs)
            response.raise_for_status()
            return response

    async def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        params = {"path": path} if path else None
        found: list[dict[str, Any]] = (await self._call("GET", "/_emulator/requests", params=params)).json()
        return found

    async def clear_requests(self) -> None:
        await self._call("DELETE", "/_emulator/requests")

    async def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = (await self._call("GET", "/_emulator/stats")).json()
        return data

    async def reset_stats(self) -> None:
        await self._call("POST", "/_emulator/stats/reset")

    async def configure(self, **settings: Any) -> None:
        await self._call("POST", "/_emulator/config", json=settings)

    async def add_model(self, spec: dict[str, Any]) -> None:
        await self._call("POST", "/_emulator/models", json=spec)

    async def generate_models(self, count: int) -> None:
        await self._call("POST", "/_emulator/models/generate", json={"count": count})

    async def remove_model(self, name: str) -> None:
        await self._call("DELETE", f"/_emulator/models/{name}")


@asynccontextmanager
async def _emulating(args: list[str]) -> AsyncIterator[EmulatorProcess]:
    """An emulator process started from ``args``, killed (and its log removed) at the end."""
    emulator = EmulatorProcess(args)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.kill()
        emulator.child.log.unlink(missing_ok=True)


@asynccontextmanager
async def run_emulator(*, version: str = "0.32.15", models: str = "default",
                       token_delay_s: float = 0.0, show_delay_s: float = 0.0, port: int = 0,
                       extra_args: Sequence[str] = ()) -> AsyncIterator[EmulatorProcess]:
    args = [sys.executable, "-m", "pendra.testing.ollama_emulator", "--host", "127.0.0.1",
            "--port", str(port), "--version", version, "--models", models,
            "--token-delay", str(token_delay_s), "--show-delay", str(show_delay_s), *extra_args]
    async with _emulating(args) as emulator:
        yield emulator


@asynccontextmanager
async def run_speaches(*, models: Sequence[str] = (), impostor: bool = False, port: int = 0,
                       download_s: float = 0.0) -> AsyncIterator[EmulatorProcess]:
    """The Speaches emulator (``pendra.testing.speaches``) with ``models`` installed, or with
    ``impostor`` a vLLM-shaped server that is not Speaches. Restartable on its port (``start``)."""
    import json
    args = [sys.executable, "-m", "pendra.testing.speaches_emulator", "--host", "127.0.0.1",
            "--port", str(port), "--models", json.dumps(list(models)),
            "--download-s", str(download_s), *(["--impostor"] if impostor else [])]
    async with _emulating(args) as emulator:
        yield emulator


@asynccontextmanager
async def run_openai_compat(flavour: str, *, models: str = "default", port: int = 0,
                            extra_args: Sequence[str] = ()) -> AsyncIterator[EmulatorProcess]:
    """An OpenAI-compatible server emulator (``vllm``, ``lmstudio`` or ``llamacpp``): see
    ``pendra.testing.openai_compat``. Its control surface is the Ollama emulator's subset
    (requests, configure, add_model, remove_model)."""
    args = [sys.executable, "-m", "pendra.testing.openai_compat", "--flavour", flavour,
            "--host", "127.0.0.1", "--port", str(port), "--models", models, *extra_args]
    async with _emulating(args) as emulator:
        yield emulator

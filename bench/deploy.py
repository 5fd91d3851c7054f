"""Real Pendra processes for the benchmarks: ``pendra up``, ``pendra server`` and ``pendra worker``,
started as the integration tests start them (real commands, real sockets, 127.0.0.1 only).

Rules: every process gets its own ``PENDRA_HOME`` under one temporary folder and is killed on exit;
a worker is enrolled through the real CLI (``pendra workers add``); log levels are WARNING so the
figures do not include log formatting; ``MAX_CONCURRENT`` is 64 (the clamp) so the worker's slot
limit does not cap throughput below the concurrency under test.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.client import Connection
from pendra.testing.servers import ChildProcess, start_process

PENDRA = str(Path(sys.executable).with_name("pendra"))
CHAT_MODEL = "llama3.2:latest"
BASE_ENV = {"PENDRA_LOG_LEVEL": "WARNING", "MAX_CONCURRENT": "64", "QUEUE_TIMEOUT": "30",
            "REFRESH_INTERVAL": "10"}
KEY = re.compile(r"API key:\s+(pdr_sk_\S+)")


@dataclass
class Deployment:
    """A running control plane (maybe with its worker in the same process) and an API key."""

    base_url: str
    api_key: str
    process: ChildProcess
    home: Path

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def connection(self) -> Connection:
        return Connection(self.base_url, {"Authorization": f"Bearer {self.api_key}"})

    async def wait_for_model(self, model: str = CHAT_MODEL, timeout_s: float = 30) -> None:
        conn = self.connection()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    status, body = await conn.request("GET", "/api/v1/models")
                    if status == 200 and f'"id":"{model}"'.encode() in body:
                        return
                    await asyncio.sleep(0.1)
        finally:
            await conn.close()


def _env(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**env, **BASE_ENV, "PENDRA_HOME": str(home), **extra}


async def _read_key(child: ChildProcess, timeout_s: float = 20) -> str:
    # The first-start secrets are printed as soon as they exist, before the ready line.
    for line in child.before_ready:
        if match := KEY.search(line):
            return match.group(1)
    assert child.process is not None and child.process.stdout is not None
    async with asyncio.timeout(timeout_s):
        while line := await child.process.stdout.readline():
            if match := KEY.search(line.decode(errors="replace")):
                return match.group(1)
    raise RuntimeError(f"no API key printed:\n{child.tail()}")


@asynccontextmanager
async def temp_root() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pendra-bench-") as root:
        yield Path(root)


@asynccontextmanager
async def pendra_up(root: Path, ollama_url: str, **env: str) -> AsyncIterator[Deployment]:
    """``pendra up`` against ``ollama_url``; ready once the chat model is listed."""
    home = root / "up"
    async with start_process([PENDRA, "up", "--host", "127.0.0.1", "--port", "0"],
                             env=_env(home, OLLAMA_ENDPOINT=ollama_url, **env),
                             ready_prefix="Pendra is running at ") as child:
        deployment = Deployment(child.url, await _read_key(child), child, home)
        await deployment.wait_for_model()
        yield deployment


@asynccontextmanager
async def pendra_server(root: Path, **env: str) -> AsyncIterator[Deployment]:
    """``pendra server`` alone (SQLite under its home)."""
    home = root / "server"
    async with start_process([PENDRA, "server", "--host", "127.0.0.1", "--port", "0"],
                             env=_env(home, **env),
                             ready_prefix="Pendra control plane listening on ") as child:
        yield Deployment(child.url, await _read_key(child), child, home)


async def pendra_cli(home: Path, *args: str, timeout_s: float = 60) -> str:
    """Run ``pendra ARGS`` against the control plane whose home is ``home``, without blocking the
    event loop (load may be running); its stdout, or RuntimeError with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        PENDRA, *args, env=_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"`pendra {' '.join(args)}` took more than {timeout_s:.0f}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"`pendra {' '.join(args)}` failed ({proc.returncode}): "
                           f"{err.decode(errors='replace')[-500:]}")
    return out.decode(errors="replace")


def enrol(server: Deployment, name: str) -> tuple[str, str]:
    """``pendra workers add``: (worker id, private key)."""
    out = subprocess.run([PENDRA, "workers", "add", "--name", name], env=_env(server.home),
                         capture_output=True, text=True, check=True, timeout=60).stdout
    command = [ln for ln in out.splitlines() if ln.rstrip().endswith(" pendra worker")]
    if not command:
        raise RuntimeError(f"unexpected `pendra workers add` output:\n{out}")
    env = dict(word.split("=", 1) for word in shlex.split(command[0])[:-2])
    return env["WORKER_ID"], env["GPU_WORKER_PRIVATE_KEY"]


@asynccontextmanager
async def pendra_worker(root: Path, server: Deployment, ollama_url: str,
                        name: str = "bench-worker") -> AsyncIterator[ChildProcess]:
    """An enrolled ``pendra worker``; ready once the server lists the chat model."""
    worker_id, private_key = enrol(server, name)
    env = _env(root / f"worker-{name}", GPU_WORKER_PRIVATE_KEY=private_key, WORKER_ID=worker_id,
               WORKER_NAME=name, APP_SERVER_WS_URL="ws" + server.base_url[4:],
               OLLAMA_ENDPOINT=ollama_url)
    child = ChildProcess([PENDRA, "worker"], env)
    # The worker prints nothing on stdout; start it by hand and wait for the server to see it.
    sink = child.log.open("ab")
    try:
        child.process = await asyncio.create_subprocess_exec(
            *child.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink,
            env=env, start_new_session=True)
    finally:
        sink.close()
    try:
        await server.wait_for_model()
        yield child
    finally:
        await child.kill()
        child.log.unlink(missing_ok=True)

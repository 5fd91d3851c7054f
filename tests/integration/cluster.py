"""A real Pendra deployment for tests: ``pendra server`` + N ``pendra worker`` processes, each worker
with its own emulated Ollama, enrolled through the real CLI (``pendra workers add``).

Everything listens on 127.0.0.1; every process is killed on exit, even when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from polling import eventually
from suite_env import WAIT
from pendra.testing.servers import EmulatorProcess, run_emulator

PENDRA = str(Path(sys.executable).with_name("pendra"))
# Short liveness bounds so failures show within seconds (the defaults are 5 s / 15 s / 10 s).
FAST = {"HEARTBEAT_INTERVAL": "0.5", "HEARTBEAT_TIMEOUT": "2", "QUEUE_TIMEOUT": "3",
        "REFRESH_INTERVAL": "0.5", "PENDRA_LOG_LEVEL": "INFO"}
# Ollama versions: alpha's has image generation (0.14.3–0.32.5), beta's does not.
VERSIONS = {"alpha": "0.20.0", "beta": "0.32.15"}


class Proc:
    """One child process whose output is kept (for readiness lines and failure reports)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.args, self.env, self.log = name, args, env, log
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> None:
        self.lines.clear()
        self.process = await asyncio.create_subprocess_exec(
            *self.args, env=self.env, stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read(), name=f"read:{self.name}")

    async def _read(self) -> None:
        assert self.process and self.process.stdout
        with self.log.open("a") as sink:
            async for raw in self.process.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                sink.write(line + "\n")
                sink.flush()
                self._new_line.set()

    async def wait_for_line(self, pattern: str, timeout_s: float) -> re.Match[str]:
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout_s * WAIT):
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                if self.process and self.process.returncode is not None and self._reader and self._reader.done():
                    raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n"
                                       + "\n".join(self.lines[-30:]))
                self._new_line.clear()
                try:
                    await asyncio.wait_for(self._new_line.wait(), 0.2)
                except TimeoutError:
                    pass

    async def wait(self, timeout_s: float) -> int:
        assert self.process
        code = await asyncio.wait_for(self.process.wait(), timeout_s * WAIT)
        if self._reader:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader:
            await self._reader

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader:
            await self._reader

    def output(self) -> str:
        return "\n".join(self.lines)


@dataclass
class WorkerInfo:
    id: str
    name: str
    private_key: str
    proc: Proc


@dataclass
class Cluster:
    root: Path
    base_url: str
    api_key: str
    server: Proc
    server_env: dict[str, str]
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    emulator_of: dict[str, EmulatorProcess] = field(default_factory=dict)
    stack: AsyncExitStack | None = None

    def on_close(self, callback: Callable[[], Awaitable[Any]]) -> None:
        """Run ``callback`` when the cluster shuts down (e.g. close a client a test made)."""
        assert self.stack is not None
        self.stack.push_async_callback(callback)

    @property
    def emulators(self) -> list[EmulatorProcess]:
        return list(self.emulator_of.values())

    @property
    def worker_ids(self) -> set[str]:
        return {w.id for w in self.workers.values()}

    @property
    def worker_names(self) -> set[str]:
        return set(self.workers)

    def http(self, *, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30 * WAIT,
                                 headers={"Authorization": f"Bearer {key or self.api_key}"})

    def admin(self) -> httpx.AsyncClient:
        """A client holding the server's per-start admin token (as the local CLI does)."""
        import yaml

        state = yaml.safe_load((self.root / "server" / "server.yaml").read_text())
        return httpx.AsyncClient(base_url=self.base_url, timeout=60 * WAIT,
                                 headers={"Authorization": f"Bearer {state['admin_token']}"})

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``pendra ARGS`` on the control-plane host (same PENDRA_HOME as the server)."""
        result = subprocess.run([PENDRA, *args], env=self.server_env, capture_output=True,
                                text=True, timeout=60 * WAIT)
        if check and result.returncode != 0:
            raise AssertionError(f"pendra {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def create_key(self, name: str) -> str:
        out = self.cli("keys", "create", "--name", name).stdout
        return re.search(r"pdr_sk_[A-Za-z0-9_-]{43}", out).group(0)  # type: ignore[union-attr]

    async def model_ids(self) -> set[str]:
        async with self.http() as http:
            response = await http.get("/api/v1/models")
            response.raise_for_status()
            return {m["id"] for m in response.json()["data"]}

    async def wait_for_models(self, check: Callable[[set[str]], bool], timeout_s: float = 15) -> set[str]:
        seen: list[set[str]] = []

        async def served() -> bool:
            seen.append(await self.model_ids())
            return check(seen[-1])  # the ids may be empty (falsy), so they are not the answer

        await eventually(served, timeout_s=timeout_s, interval_s=0.1)
        return seen[-1]

    async def status(self) -> dict[str, Any]:
        async with self.http() as http:
            response = await http.get("/api/v1/status")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    async def wait_for_workers(self, names: Iterable[str], timeout_s: float = 20) -> None:
        want = set(names)
        async def serving() -> bool:
            status = await self.status()
            return want <= {w["name"] for w in status["workers"] if w.get("models")}

        await eventually(serving, timeout_s=timeout_s, interval_s=0.1)

    # --- emulator helpers across all workers --------------------------------------------------------

    async def clear_requests(self) -> None:
        for emu in self.emulators:
            await emu.clear_requests()

    async def recorded(self, path: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for emu in self.emulators:
            found.extend(await emu.requests(path))
        return found

    async def reset_stats(self) -> None:
        for emu in self.emulators:
            await emu.reset_stats()

    async def cancelled(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for emu in self.emulators:
            found.extend((await emu.stats())["cancelled"])
        return found

    # --- worker processes --------------------------------------------------------------------------------

    def worker_env(self, name: str, private_key: str, worker_id: str, **extra: str) -> dict[str, str]:
        home = self.root / f"worker-{name}"
        home.mkdir(exist_ok=True, mode=0o700)
        return {**os.environ, **FAST, "PENDRA_HOME": str(home),
                "GPU_WORKER_PRIVATE_KEY": private_key, "WORKER_ID": worker_id,
                "WORKER_NAME": name, "APP_SERVER_WS_URL": "ws" + self.base_url[4:],
                "OLLAMA_ENDPOINT": self.emulator_of[name].base_url if name in self.emulator_of else "",
                # These workers are Ollama hosts: the other backends' ports are not probed.
                "BACKENDS_DISABLED": "lmstudio,vllm,speaches", **extra}

    async def start_worker(self, name: str) -> None:
        await self.workers[name].proc.start()
        await self.wait_for_workers([name])

    async def kill_worker(self, name: str) -> None:
        await self.workers[name].proc.kill()

    def signal_worker(self, name: str, signum: int) -> None:
        """Send ``signum`` to a worker's process (SIGSTOP freezes it with its socket open)."""
        process = self.workers[name].proc.process
        assert process is not None and process.returncode is None
        process.send_signal(signum)

    async def restart_server(self) -> None:
        """Stop the control plane (SIGTERM) and start it again: same port, home and database."""
        await self.server.stop()
        args = self.server.args
        args[args.index("--port") + 1] = self.base_url.rsplit(":", 1)[1]
        for attempt in range(50):
            await self.server.start()
            try:
                await self.server.wait_for_line(r"listening on (http://\S+)", 60)
                return
            except RuntimeError:  # exited: the old socket may still hold the port for a moment
                await self.server.wait(10)
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)

    async def run_impostor_worker(self) -> tuple[int, str]:
        """A worker with a valid id but a key the control plane never enrolled."""
        from pendra.protocol.signing import generate_keypair

        real = next(iter(self.workers.values()))
        wrong_key, _ = generate_keypair()
        env = self.worker_env(real.name + "-impostor", wrong_key, real.id)
        proc = Proc("impostor", [PENDRA, "worker"], env, self.root / "impostor.log")
        await proc.start()
        try:
            code = await proc.wait(30)
        finally:
            await proc.kill()
        return code, proc.output()


def enrolled_from(out: str) -> tuple[str, str]:
    """(worker id, private key) from `pendra workers add`: its command line, read as a shell
    reads it."""
    line = next(ln for ln in out.splitlines() if ln.rstrip().endswith(" pendra worker"))
    env = dict(word.split("=", 1) for word in shlex.split(line)[:-2])
    return env["WORKER_ID"], env["GPU_WORKER_PRIVATE_KEY"]


@asynccontextmanager
async def start_cluster(root: Path, workers: Iterable[str] = ("alpha", "beta"),
                        server_env: dict[str, str] | None = None,
                        worker_env: dict[str, str] | None = None) -> AsyncIterator[Cluster]:
    root.mkdir(parents=True, exist_ok=True)
    server_home = root / "server"
    server_home.mkdir(exist_ok=True, mode=0o700)
    env = {**os.environ, **FAST, "PENDRA_HOME": str(server_home), **(server_env or {})}
    env.pop("DATABASE_URL", None) if server_env is None or "DATABASE_URL" not in server_env else None
    async with AsyncExitStack() as stack:
        server = Proc("server", [PENDRA, "server", "--host", "127.0.0.1", "--port", "0"], env,
                      root / "server.log")
        await server.start()
        stack.push_async_callback(server.stop)
        url = (await server.wait_for_line(r"listening on (http://\S+)", 60)).group(1)
        key = (await server.wait_for_line(r"API key:\s+(pdr_sk_\S+)", 10)).group(1)
        cluster = Cluster(root, url, key, server, env, stack=stack)
        for name in workers:
            out = cluster.cli("workers", "add", "--name", name).stdout
            worker_id, private_key = enrolled_from(out)
            emu = await stack.enter_async_context(run_emulator(version=VERSIONS.get(name, "0.32.15")))
            cluster.emulator_of[name] = emu
            if VERSIONS.get(name) != "0.20.0":
                await emu.remove_model("x/z-image-turbo:latest")
            proc = Proc(f"worker-{name}", [PENDRA, "worker"],
                        cluster.worker_env(name, private_key, worker_id, **(worker_env or {})),
                        root / f"worker-{name}.log")
            cluster.workers[name] = WorkerInfo(worker_id, name, private_key, proc)
            stack.push_async_callback(proc.stop)
            await proc.start()
        await cluster.wait_for_workers(cluster.workers)
        yield cluster

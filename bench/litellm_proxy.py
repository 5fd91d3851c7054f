"""LiteLLM's proxy as a same-run comparison: a bench-only extra, never a runtime dependency of Pendra.

It lives in its own virtualenv (``.venv-litellm``, made once by ``scripts/bench.sh`` with
``pip install 'litellm[proxy]'``) because its pinned fastapi/uvicorn/pydantic would change Pendra's;
this module only starts its ``litellm`` command as a process. The proxy gets a generated config
pointing its ``ollama_chat/`` (``/api/chat``) and ``ollama/`` (``/api/embed``) providers at the
emulator's native API (the emulator has no ``/v1`` layer), one master key, no database, listens on
127.0.0.1 only, and is measured by the same load generator and the same load shapes as Pendra.

Rules: ``PENDRA_BENCH_LITELLM=0`` skips it; if it is not installed, or does not start or answer a chat within its deadline, the reason is
returned (and printed by the benchmark) and everything else still runs; the process and its
children are killed on exit; its output goes to a log file next to its config.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bench.client import HttpError
from bench.deploy import CHAT_MODEL
from bench.load import EMBED_MODEL, Relay, chat_body

VENV = Path(__file__).resolve().parent.parent / ".venv-litellm"
MASTER_KEY = "sk-pendra-bench"  # LiteLLM wants master keys to start with sk-
# Importing litellm takes many seconds on a busy 2-core machine; past this it did not start.
START_TIMEOUT_S = 120.0
# No background work the comparison would pay for: no cost map download, no telemetry, quiet logs.
QUIET_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
             "LITELLM_TELEMETRY": "False", "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True"}


@dataclass
class Proxy:
    """The running proxy as a relay, or why there is none."""

    relay: Relay | None
    reason: str = ""


def executable() -> Path | None:
    """The ``litellm`` command of the bench's own virtualenv, if it is there."""
    path = VENV / "bin" / "litellm"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def config(emulator_url: str) -> dict[str, object]:
    """The proxy's config: the chat and the embedding model, both on the emulator's native API."""
    return {
        "model_list": [
            {"model_name": CHAT_MODEL,
             "litellm_params": {"model": f"ollama_chat/{CHAT_MODEL}", "api_base": emulator_url}},
            {"model_name": EMBED_MODEL,
             "litellm_params": {"model": f"ollama/{EMBED_MODEL}", "api_base": emulator_url}},
        ],
        "litellm_settings": {"drop_params": True, "telemetry": False},
        "general_settings": {"master_key": MASTER_KEY},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _until_answers(relay: Relay, process: asyncio.subprocess.Process) -> None:
    conn = relay.connection()
    try:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"it exited with status {process.returncode}")
            try:
                status, body = await conn.request("POST", relay.chat_path, chat_body())
            except HttpError:
                await asyncio.sleep(0.5)  # not listening yet
                continue
            if status == 200:
                return
            raise RuntimeError(f"a chat through it answered {status}: {body[:200]!r}")
    finally:
        await conn.close()


def _tail(log: Path, lines: int = 5) -> str:
    with suppress(OSError):
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""


@asynccontextmanager
async def litellm_proxy(root: Path, emulator_url: str) -> AsyncIterator[Proxy]:
    """LiteLLM's proxy in front of ``emulator_url``, ready once a chat through it succeeds."""
    command = executable()
    if os.environ.get("PENDRA_BENCH_LITELLM") == "0":
        yield Proxy(None, "skipped (PENDRA_BENCH_LITELLM=0)")
        return
    if command is None:
        yield Proxy(None, f"LiteLLM is not installed ({VENV / 'bin' / 'litellm'} is missing; "
                          "scripts/bench.sh makes it)")
        return
    home = root / "litellm"
    home.mkdir(parents=True, exist_ok=True)
    config_path, log = home / "config.yaml", home / "litellm.log"
    config_path.write_text(json.dumps(config(emulator_url), indent=2))  # JSON is YAML
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}
    with log.open("ab") as sink:
        process = await asyncio.create_subprocess_exec(
            str(command), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1", stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            env={**env, **QUIET_ENV, "HOME": str(home)}, cwd=home, start_new_session=True)
    relay = Relay("litellm", f"http://127.0.0.1:{port}", MASTER_KEY, "/v1/chat/completions",
                  "/v1/embeddings")
    try:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await _until_answers(relay, process)
        except (TimeoutError, RuntimeError) as exc:
            reason = str(exc) or f"it did not answer within {START_TIMEOUT_S:.0f}s"
            yield Proxy(None, f"LiteLLM's proxy did not start: {reason} ({_tail(log)})")
            return
        yield Proxy(relay)
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the proxy and its children
            await process.wait()

"""The worker-host commands: `pendra models` and `pendra backends` against a real (emulated) Ollama."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from pendra.testing.servers import run_emulator

PENDRA = str(Path(sys.executable).with_name("pendra"))


def _pendra(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PENDRA, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PENDRA_HOME": str(home), **env})


async def test_models_json_lists_metadata(tmp_path: Path) -> None:
    """`pendra models --json` carries id, backend, context length, capabilities, size and quantisation."""
    async with run_emulator() as emu:
        result = _pendra(tmp_path, "models", "--json", OLLAMA_ENDPOINT=emu.base_url)
    assert result.returncode == 0, result.stderr
    models = {m["id"]: m for m in json.loads(result.stdout)}
    llama = models["llama3.2:latest"]
    assert llama["backend"] == "ollama"
    assert llama["context_length"] == 131072
    assert set(llama["capabilities"]) == {"completion", "tools"}
    assert llama["parameter_size"] == "3.2B" and llama["quantization_level"] == "Q4_K_M"
    assert llama["size"] > 0
    assert "embedding" in models["nomic-embed-text:latest"]["capabilities"]


async def test_backends_json_says_why_not(tmp_path: Path) -> None:
    """`pendra backends --json` shows the endpoint tried, verified or not, and the version."""
    async with run_emulator(version="0.30.1") as emu:
        ok = _pendra(tmp_path, "backends", "--json", OLLAMA_ENDPOINT=emu.base_url)
    assert ok.returncode == 0, ok.stderr
    [ollama] = [b for b in json.loads(ok.stdout) if b["kind"] == "ollama"]
    assert ollama["verified"] and ollama["version"] == "0.30.1"
    gone = _pendra(tmp_path, "backends", "--json", OLLAMA_ENDPOINT=emu.base_url)
    [down] = [b for b in json.loads(gone.stdout) if b["kind"] == "ollama"]
    assert not down["verified"] and down["reason"]


def test_worker_without_key_refuses_with_instructions(tmp_path: Path) -> None:
    """`pendra worker` with no private key exits 2 and says how to get one."""
    result = _pendra(tmp_path, "worker")
    assert result.returncode == 2
    assert "pendra workers add" in result.stderr


def test_workers_add_prints_a_command_a_shell_runs_as_is(tmp_path: Path) -> None:
    """`pendra workers add` with a name holding an apostrophe and `$`: the printed line, run by a
    real shell, gives the worker exactly its id, name and private key (it used to print the name
    in raw single quotes, which the apostrophe broke)."""
    name = "O'Brien's $GPU box"
    result = _pendra(tmp_path, "workers", "add", "--name", name)
    assert result.returncode == 0, result.stderr
    [line] = [ln.strip() for ln in result.stdout.splitlines() if ln.endswith(" pendra worker")]
    show = (f"{shlex.quote(sys.executable)} -c " + shlex.quote(
        "import json, os; print(json.dumps({k: os.environ[k] for k in "
        "('GPU_WORKER_PRIVATE_KEY', 'WORKER_ID', 'WORKER_NAME', 'APP_SERVER_WS_URL')}))"))
    shown = json.loads(subprocess.run(["/bin/sh", "-c", line.removesuffix("pendra worker") + show],
                                      capture_output=True, text=True, timeout=30,
                                      check=True).stdout)
    assert shown["WORKER_NAME"] == name
    assert shown["WORKER_ID"] in result.stdout.splitlines()[0]
    assert shown["GPU_WORKER_PRIVATE_KEY"] in result.stdout.splitlines()[1]
    assert shown["APP_SERVER_WS_URL"].startswith("ws://")


async def test_models_install_into_this_hosts_lmstudio(tmp_path: Path) -> None:
    """`pendra models install ID --backend lmstudio` downloads through this host's LM Studio."""
    import asyncio

    from pendra.testing.servers import run_openai_compat

    async with run_openai_compat("lmstudio") as lms:
        await lms.configure(download_bytes_per_s=3_000_000)
        result = await asyncio.to_thread(
            _pendra, tmp_path, "models", "install", "qwen3:8b", "--backend", "lmstudio",
            LMSTUDIO_ENDPOINT=lms.base_url, BACKENDS_DISABLED="ollama,vllm")
        assert result.returncode == 0, result.stderr
        [download] = await lms.requests("/api/v1/models/download")
        assert download["body"] == {
            "model": "https://huggingface.co/lmstudio-community/Qwen3-8B-GGUF",
            "quantization": "Q4_K_M"}
        listed = await asyncio.to_thread(_pendra, tmp_path, "models", "--json",
                                         LMSTUDIO_ENDPOINT=lms.base_url,
                                         BACKENDS_DISABLED="ollama,vllm")
    assert "qwen3-8b" in {m["id"] for m in json.loads(listed.stdout)}
    wrong = _pendra(tmp_path, "models", "install", "phi4-mini", "--backend", "lmstudio")
    assert wrong.returncode == 1 and "cannot be installed into LM Studio" in " ".join(
        wrong.stderr.split())

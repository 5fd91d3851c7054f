"""``pendra up``: the one-machine default, as a newcomer runs it."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import httpx
from openai import AsyncOpenAI

from cluster import FAST, PENDRA, Proc
from pendra.testing.servers import run_emulator
from polling import eventually
from suite_env import WAIT


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_for_model(api: AsyncOpenAI, model: str) -> None:
    async def listed() -> bool:
        return model in {m.id async for m in api.models.list()}

    await eventually(listed, timeout_s=20, interval_s=0.2)


async def _start_up(home: Path, ollama: str, log: Path) -> tuple[Proc, str]:
    env = {**os.environ, **FAST, "PENDRA_HOME": str(home), "OLLAMA_ENDPOINT": ollama}
    proc = Proc("up", [PENDRA, "up", "--port", "0"], env, log)
    await proc.start()
    url = (await proc.wait_for_line(r"Pendra is running at (http://\S+)", 60)).group(1)
    return proc, url


def _start_on_taken_port(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run `pendra <command>` on a port another socket is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([PENDRA, command, "--port", str(port)], capture_output=True,
                                text=True, timeout=60 * WAIT,
                                env={**os.environ, **FAST, "PENDRA_HOME": str(home)})
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (f"CannotListen: cannot listen on 127.0.0.1:{port}: address "
                                     "already in use (is another pendra running? use --port)")
    return result


def _shared_files(home: Path) -> list[str]:
    """Everything under ``home`` that its group or others may access."""
    return [f"{p} {stat.filemode(p.stat().st_mode)}" for p in [home, *home.rglob("*")]
            if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)]


def test_server_on_a_taken_port_says_so_in_one_line_and_creates_nothing(tmp_path: Path) -> None:
    """`pendra server` on a taken port exits 1 with one line naming the address, before it has
    created its folder or its database."""
    _start_on_taken_port("server", tmp_path / "home")
    assert not (tmp_path / "home").exists()


async def test_first_start_prints_credentials_once_and_serves_chat(tmp_path: Path) -> None:
    """A start on a taken port fails in one line and creates nothing, so the next start is still the
    first: it prints the admin password and a working key; every file under PENDRA_HOME is private
    (0600, the folder 0700); a restart prints neither secret and the key, the worker enrolment and
    the SQLite data survive."""
    home = tmp_path / "home"
    _start_on_taken_port("up", home)
    assert not home.exists()
    async with run_emulator() as emu:
        proc, url = await _start_up(home, emu.base_url, tmp_path / "up1.log")
        try:
            key = (await proc.wait_for_line(r"API key:\s+(pdr_sk_\S+)", 10)).group(1)
            password = (await proc.wait_for_line(r"Admin password:\s+(\S+)", 10)).group(1)
            async with httpx.AsyncClient(base_url=url, timeout=10 * WAIT) as http:
                signed_in = await http.post("/sign-in", data={"name": "admin", "password": password},
                                            headers={"Origin": url})  # makes the console secret
                assert signed_in.status_code == 303, signed_in.text
            assert (home / "console-secret").exists() and (home / "pendra.db-wal").exists()
            assert _shared_files(home) == []
            async with AsyncOpenAI(base_url=url + "/api/v1", api_key=key, max_retries=0) as api:
                await _wait_for_model(api, "llama3.2:latest")
                reply = await api.chat.completions.create(
                    model="llama3.2:latest", messages=[{"role": "user", "content": "hello"}])
                assert reply.choices[0].message.content
        finally:
            await proc.stop()
        assert proc.process is not None and proc.process.returncode == 0, proc.output()
        assert (home / "pendra.db").exists()
        assert _shared_files(home) == []

        again, url2 = await _start_up(home, emu.base_url, tmp_path / "up2.log")
        try:
            await again.wait_for_line(r"pendra keys create", 10)
            assert "Admin password" not in again.output()
            async with AsyncOpenAI(base_url=url2 + "/api/v1", api_key=key, max_retries=0) as api:
                await _wait_for_model(api, "llama3.2:latest")
        finally:
            await again.stop()


async def test_up_without_ollama_says_how_to_install_it(tmp_path: Path) -> None:
    """With no Ollama reachable, `pendra up` still starts and tells the user what to do."""
    proc, url = await _start_up(tmp_path / "home", f"http://127.0.0.1:{_closed_port()}",
                                tmp_path / "up.log")
    try:
        await proc.wait_for_line(r"ollama\.com/download", 20)
        assert re.search(r"next\s+refresh\s+tick", proc.output())  # rich may wrap the line
    finally:
        await proc.stop()

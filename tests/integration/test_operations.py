"""Day-two operation through the real CLI against a real ``pendra up``: lists that scripts can read
(whole ids when piped, ``--json`` everywhere), usage with failures told apart and exported as CSV,
bounded settings refused with their range, install speed, and the URL other hosts are given."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import yaml
from openai import AsyncOpenAI, NotFoundError

from cluster import FAST, PENDRA, Proc
from pendra.server.store.usage import EXPORT_COLUMNS
from pendra.testing.servers import EmulatorProcess, run_emulator
from polling import eventually
from suite_env import WAIT

pytestmark = pytest.mark.asyncio(loop_scope="module")

# In the catalogue and the emulator's registry; 815 MB, pulled at PULL_BYTES_PER_S.
INSTALL_MODEL = "gemma3:1b"
PULL_BYTES_PER_S = 400_000_000
DECIMAL = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


@dataclass
class Up:
    home: Path
    url: str
    key: str
    proc: Proc
    emulator: EmulatorProcess

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``pendra ARGS`` as a script would: stdout a pipe, a narrow COLUMNS."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("PENDRA_")}
        return subprocess.run([PENDRA, *args], capture_output=True, text=True, timeout=60 * WAIT,
                              env=base | FAST | {"PENDRA_HOME": str(self.home), "COLUMNS": "60",
                                                 "OLLAMA_ENDPOINT": self.emulator.base_url} | env)

    def json(self, *args: str) -> object:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def up(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Up]:
    tmp = tmp_path_factory.mktemp("ops")
    home = tmp / "home"
    async with run_emulator() as emu:
        env = {**os.environ, **FAST, "PENDRA_HOME": str(home), "OLLAMA_ENDPOINT": emu.base_url}
        proc = Proc("up", [PENDRA, "up", "--port", "0"], env, tmp / "up.log")
        await proc.start()
        try:
            url = (await proc.wait_for_line(r"Pendra is running at (http://\S+)", 60)).group(1)
            key = (await proc.wait_for_line(r"API key:\s+(pdr_sk_\S+)", 10)).group(1)
            async with AsyncOpenAI(base_url=url + "/api/v1", api_key=key, max_retries=0) as api:
                async def listed() -> bool:
                    return "llama3.2:latest" in {m.id async for m in api.models.list()}
                await eventually(listed, timeout_s=20, interval_s=0.2)
            yield Up(home, url, key, proc, emu)
        finally:
            await proc.stop()


async def test_piped_tables_keep_whole_ids(up: Up) -> None:
    """Piped to another program with a 60-column COLUMNS, `pendra models`, `keys list`, `workers
    list` and `status` print every id whole on one line: no ellipsis, nothing folded."""
    models = [m["id"] for m in up.json("models")]  # type: ignore[index, union-attr]
    assert "llama3.2:latest" in models
    keys = [k["id"] for k in up.json("keys", "list")]  # type: ignore[index, union-attr]
    workers = up.json("workers", "list")
    assert isinstance(workers, list) and workers
    for args, ids in ((["models"], models), (["keys", "list"], keys),
                      (["workers", "list"], [w["id"] for w in workers]),
                      (["status"], [w["id"] for w in workers])):
        result = up.cli(*args)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        for whole in ids:
            assert any(whole in line for line in lines), (args, whole, result.stdout)
        if args == ["models"]:
            assert "…" not in result.stdout, result.stdout
        assert max(len(line) for line in lines) > 60  # wider than COLUMNS: nothing was cut


async def test_every_list_command_has_json_with_its_documented_keys(up: Up) -> None:
    """Each list command answers `--json` with the keys docs/cli.md promises."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    expected = {
        ("models",): {"id", "backend", "context_length", "capabilities", "size"},
        ("backends",): {"kind", "endpoint", "verified", "version", "tried", "reason"},
        ("keys", "list"): {"id", "name", "prefix", "created_at", "last_used_at", "revoked_at"},
        ("workers", "list"): {"id", "name", "connected", "last_seen_at", "load", "backends",
                              "models"},
        ("config", "show"): {"key", "env", "value", "meaning"},
    }
    for command, keys in expected.items():
        data = up.json(*command)
        assert isinstance(data, list) and data, command
        assert keys <= set(data[0]), (command, data[0])
        assert f"pendra {' '.join(command)} --json" in docs
        for key in keys:
            assert f"`{key}`" in docs, key
    status = up.json("status")
    assert isinstance(status, dict) and {"workers", "models", "waiting_requests"} <= set(status)
    usage = up.json("usage")
    assert isinstance(usage, dict)
    assert {"since", "until", "totals", "failures", "per_model", "per_key",
            "per_worker"} <= set(usage)


async def test_config_set_refuses_out_of_range(up: Up) -> None:
    """`pendra config set max_concurrent 200` exits 2 with the allowed range and changes nothing;
    a value in range is saved."""
    before = (up.home / "config.yaml").read_text()
    refused = up.cli("config", "set", "max_concurrent", "200")
    assert refused.returncode == 2
    assert "max_concurrent must be between 1 and 64 (got 200)" in refused.stderr
    assert (up.home / "config.yaml").read_text() == before
    saved = up.cli("config", "set", "max_concurrent", "4")
    assert saved.returncode == 0, saved.stderr
    assert yaml.safe_load((up.home / "config.yaml").read_text())["max_concurrent"] == 4


async def test_usage_tells_failures_apart_and_exports_csv(up: Up) -> None:
    """After 3 served chats and 4 requests for a model nobody serves: `pendra usage` counts 4
    client errors, shows the latency of the 3 served requests (not the failures' 0 ms), names the
    missing model's row "(none served)" (never "None"); `--csv` and the admin API export exactly
    these 7 records with the record's columns, and a period before them is empty."""
    start = time.time()
    async with AsyncOpenAI(base_url=up.url + "/api/v1", api_key=up.key, max_retries=0) as api:
        for _ in range(3):
            await api.chat.completions.create(model="llama3.2:latest",
                                              messages=[{"role": "user", "content": "hi"}])
        for _ in range(4):
            with pytest.raises(NotFoundError):
                await api.chat.completions.create(model="no-such-model",
                                                  messages=[{"role": "user", "content": "hi"}])

    async def recorded() -> dict[str, object] | None:
        data = up.json("usage", "--since", "1h")
        assert isinstance(data, dict)
        return data if data["totals"]["requests"] >= 7 else None  # type: ignore[index]

    summary = await eventually(recorded, timeout_s=15, interval_s=0.3)
    totals = summary["totals"]
    assert isinstance(totals, dict)
    assert (totals["requests"], totals["served"], totals["client_errors"],
            totals["server_errors"], totals["client_closed"]) == (7, 3, 4, 0, 0)
    assert totals["latency_p50_ms"] is not None and totals["latency_p50_ms"] > 0
    assert summary["failures"] == [{"status": 404, "class": "client_errors", "requests": 4}]

    text = up.cli("usage", "--since", "1h")
    assert text.returncode == 0, text.stderr
    assert "None" not in text.stdout
    assert "(none served)" in text.stdout
    assert "7 requests, 3 served, 4 failed (4 client errors (4xx))" in text.stdout
    assert re.search(r"Latency of served requests: p50 [1-9][\d,]* ms", text.stdout), text.stdout

    exported = up.cli("usage", "--csv", "--since", "1h")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    records = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert len(records) == 7
    assert sorted(r["status"] for r in records) == ["200"] * 3 + ["404"] * 4
    assert {r["model_requested"] for r in records} == {"llama3.2:latest", "no-such-model"}
    assert all(r["created_at"].endswith("Z") for r in records)

    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start - 1))
    empty = up.cli("usage", "--csv", "--since", "2h", "--until", until)
    assert empty.returncode == 0 and empty.stdout.strip() == ",".join(EXPORT_COLUMNS)

    token = yaml.safe_load((up.home / "server.yaml").read_text())["admin_token"]
    async with httpx.AsyncClient(base_url=up.url, timeout=10 * WAIT) as http:
        anonymous = await http.get("/api/v1/usage/export")
        assert anonymous.status_code == 401
        response = await http.get("/api/v1/usage/export", params={"since": "2000-01-01"},
                                  headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        assert len(list(csv.reader(io.StringIO(response.text)))) == 8
        backwards = await http.get("/api/v1/usage/export",
                                   params={"since": "2030-01-01", "until": "2020-01-01"},
                                   headers={"Authorization": f"Bearer {token}"})
        assert backwards.status_code == 400 and backwards.json()["error"]["param"] == "until"


def _speed_line(output: str) -> tuple[float, float, float]:
    """(bytes, seconds, bytes per second) from `Installed …(815.5 MB in 2.0 s, 400.0 MB/s)`."""
    found = re.search(r"([\d.]+) (\w?B) in ([\d.]+) s, ([\d.]+) (\w?B)/s", output)
    assert found, output
    size, unit, seconds, speed, speed_unit = found.groups()
    return (float(size) * DECIMAL[unit], float(seconds), float(speed) * DECIMAL[speed_unit])


async def test_install_speed_is_bytes_over_the_pulls_time(up: Up) -> None:
    """A local and a remote install each end with the pull's size, time and speed: the speed is
    the size over the time (same units), and no faster or slower than the whole command allows
    (the pull fits inside the command's own wall-clock time)."""
    await up.emulator.configure(pull_bytes_per_s=PULL_BYTES_PER_S)
    began = time.monotonic()
    local = up.cli("models", "install", INSTALL_MODEL)
    wall = time.monotonic() - began
    assert local.returncode == 0, local.stderr
    size, seconds, speed = _speed_line(local.stdout)
    assert size == pytest.approx(815_000_000, rel=0.01)
    assert speed == pytest.approx(size / seconds, rel=0.06)  # both printed to one decimal
    assert seconds <= wall and speed >= size / wall

    removed = up.cli("models", "remove", INSTALL_MODEL)
    assert removed.returncode == 0, removed.stderr
    workers = up.json("workers", "list")
    assert isinstance(workers, list)
    began = time.monotonic()
    remote = up.cli("models", "install", INSTALL_MODEL, "--worker", workers[0]["id"])
    wall = time.monotonic() - began
    assert remote.returncode == 0, remote.stderr
    size, seconds, speed = _speed_line(remote.stdout)
    assert speed == pytest.approx(size / seconds, rel=0.06)
    assert seconds <= wall and speed >= size / wall


async def test_server_prints_and_hands_out_its_public_url(tmp_path: Path) -> None:
    """`pendra server --public-url https://…` prints the worker URL as wss://… with the rule that
    chose it, and `pendra workers add` on the same host, reading the running server's breadcrumb,
    prints a worker command with that same URL."""
    home = tmp_path / "home"
    env = {**os.environ, **FAST, "PENDRA_HOME": str(home)}
    proc = Proc("server", [PENDRA, "server", "--port", "0", "--public-url",
                           "https://pendra.example.test:8443/"], env, tmp_path / "server.log")
    await proc.start()
    try:
        line = await proc.wait_for_line(r"Workers connect to (\S+)", 60)
        assert line.group(1) == "wss://pendra.example.test:8443/ws/gpu"
        assert "Public URL: https://pendra.example.test:8443  (from PUBLIC_URL)" in proc.output()
        added = subprocess.run([PENDRA, "workers", "add", "--name", "far-box"],
                               capture_output=True, text=True, timeout=60 * WAIT,
                               env={**os.environ, "PENDRA_HOME": str(home)})
        assert added.returncode == 0, added.stderr
        assert "APP_SERVER_WS_URL=wss://pendra.example.test:8443 pendra worker" in added.stdout
    finally:
        await proc.stop()
    bad = subprocess.run([PENDRA, "server", "--port", "0", "--public-url", "pendra.example"],
                         capture_output=True, text=True, timeout=60 * WAIT, env=env)
    assert bad.returncode == 2 and "--public-url" in bad.stderr


async def test_starting_the_server_migrates_an_older_database(tmp_path: Path) -> None:
    """Upgrading is "stop, update, start": `pendra server` started on a database left at the first
    migration brings it to the newest one before it serves (README's upgrade instructions rely on
    it)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from pendra.server.store.db import current_revision, upgrade

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    database = f"sqlite+aiosqlite:///{home / 'pendra.db'}"
    engine = create_async_engine(database)
    try:
        await upgrade(engine, "0001")
        assert await current_revision(engine) == "0001"
    finally:
        await engine.dispose()
    proc = Proc("server", [PENDRA, "server", "--port", "0"],
                {**os.environ, **FAST, "PENDRA_HOME": str(home)}, tmp_path / "server.log")
    await proc.start()
    try:
        await proc.wait_for_line(r"Pendra control plane listening on", 60)
    finally:
        await proc.stop()
    engine = create_async_engine(database)
    try:
        assert await current_revision(engine) == _head_revision()
    finally:
        await engine.dispose()


def _head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pendra.server.store.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None and head != "0001"
    return head

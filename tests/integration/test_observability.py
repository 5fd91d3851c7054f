"""Operating a live ``pendra up`` (a real process, its output going to a file as under systemd):
the control plane's and the worker's /metrics move by exactly the requests made, and the logs are
one line per record — plain text or JSON — with the request id on every line of a request."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from cluster import FAST, PENDRA
from pendra.testing.servers import run_emulator
from polling import eventually
from suite_env import WAIT

METRICS_TOKEN = "prometheus-reads-this-0123456789"
MODEL = "llama3.2:latest"
EMBED_MODEL = "nomic-embed-text:latest"
# How a plain-text log line starts: the time, the level, the logger.
LINE_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|"
                        r"CRITICAL) [\w.]+: ")

# What `pendra up` prints for people on stdout (the URL, first-start secrets, how to make keys).
ANNOUNCEMENTS = ("First start", "  ", "Pendra is running at")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Up:
    url: str
    key: str
    output: Path

    def lines(self) -> list[str]:
        return self.output.read_text(encoding="utf-8").splitlines()


@asynccontextmanager
async def pendra_up(tmp_path: Path, ollama: str, **env: str) -> AsyncIterator[Up]:
    """``pendra up`` with stdout and stderr going to one file (not a terminal), stopped with
    SIGTERM on exit."""
    output = tmp_path / "up.log"
    full_env = {**os.environ, **FAST, "PENDRA_HOME": str(tmp_path / "home"),
                "OLLAMA_ENDPOINT": ollama, **env}
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            PENDRA, "up", "--port", "0", env=full_env, stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT)
    try:
        def started() -> tuple[str, str] | None:
            if process.returncode is not None:
                raise RuntimeError(f"pendra up exited:\n{output.read_text()}")
            text = output.read_text(encoding="utf-8")
            url = re.search(r"Pendra is running at (http://\S+)", text)
            key = re.search(r"API key:\s+(pdr_sk_\S+)", text)
            return (url.group(1), key.group(1)) if url and key else None

        url, key = await eventually(started, timeout_s=60, interval_s=0.1)
        async with AsyncOpenAI(base_url=url + "/api/v1", api_key=key, max_retries=0) as api:
            async def served() -> bool:
                return {MODEL, EMBED_MODEL} <= {m.id async for m in api.models.list()}

            await eventually(served, timeout_s=20, interval_s=0.2)
        yield Up(url, key, output)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15 * WAIT)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert process.returncode == 0, output.read_text()


async def scrape(http: httpx.AsyncClient, url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await http.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return parse(response.text)


async def test_metrics_of_a_live_up_move_by_exactly_the_requests(tmp_path: Path) -> None:
    """Against a real `pendra up`: two chats (one streamed, with usage), one embedding and one
    request for a model nobody serves move the control plane's counters by exactly those requests
    (tokens by exactly what the API reported), and the worker's own /metrics — on its local
    port — count the three its backend answered. /metrics refuses a scrape without the token."""
    worker_port = free_port()
    async with run_emulator() as emu, pendra_up(
            tmp_path, emu.base_url, PENDRA_METRICS_TOKEN=METRICS_TOKEN,
            METRICS_PORT=str(worker_port)) as up:
        worker_url = f"http://127.0.0.1:{worker_port}/metrics"
        async with httpx.AsyncClient(timeout=10 * WAIT) as http, \
                AsyncOpenAI(base_url=up.url + "/api/v1", api_key=up.key, max_retries=0) as api:
            assert (await http.get(up.url + "/metrics")).status_code == 401
            assert (await http.get(up.url + "/metrics",
                                   headers={"Authorization": f"Bearer {up.key}"})
                    ).status_code == 401
            before = await scrape(http, up.url + "/metrics", METRICS_TOKEN)
            worker_before = await scrape(http, worker_url)

            hello = [{"role": "user", "content": "hello"}]
            whole = await api.chat.completions.create(model=MODEL, messages=hello)
            streamed_usage = None
            stream = await api.chat.completions.create(
                model=MODEL, messages=hello, stream=True, stream_options={"include_usage": True})
            async for chunk in stream:
                streamed_usage = chunk.usage or streamed_usage
            embedded = await api.embeddings.create(model=EMBED_MODEL, input="hello")
            missing = await http.post(up.url + "/api/v1/chat/completions",
                                      headers={"Authorization": f"Bearer {up.key}"},
                                      json={"model": "not-served-here", "messages": hello})
            assert missing.status_code == 404
            assert whole.usage is not None and streamed_usage is not None

            after = await scrape(http, up.url + "/metrics", METRICS_TOKEN)
            worker_after = await scrape(http, worker_url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    workers = {dict(labels)["worker"] for name, labels in after
               if name == "pendra_worker_capacity"}
    (worker_id,) = workers
    worker = dict(worker=worker_id, worker_name=next(
        dict(labels)["worker_name"] for name, labels in after if name == "pendra_worker_capacity"))
    assert value(after, "pendra_workers_connected") == 1
    assert value(after, "pendra_worker_capacity", **worker) == 1
    assert value(after, "pendra_worker_in_flight", **worker) == 0
    assert moved("pendra_requests_total", kind="chat", model=MODEL, status="200", **worker) == 2
    assert moved("pendra_requests_total", kind="embed", model=EMBED_MODEL, status="200",
                 **worker) == 1
    assert moved("pendra_requests_total", kind="chat", model="", worker="", worker_name="",
                 status="404") == 1
    assert sum(v for (name, _), v in after.items() if name == "pendra_requests_total") \
        - sum(v for (name, _), v in before.items() if name == "pendra_requests_total") == 4
    assert moved("pendra_prompt_tokens_total", kind="chat", model=MODEL) == \
        whole.usage.prompt_tokens + streamed_usage.prompt_tokens
    assert moved("pendra_completion_tokens_total", kind="chat", model=MODEL) == \
        whole.usage.completion_tokens + streamed_usage.completion_tokens
    assert moved("pendra_prompt_tokens_total", kind="embed", model=EMBED_MODEL) == \
        embedded.usage.prompt_tokens
    assert moved("pendra_request_duration_seconds_count", kind="chat", model=MODEL) == 2
    assert moved("pendra_time_to_first_token_seconds_count", kind="chat", model=MODEL) == 1
    assert moved("pendra_queue_wait_seconds_count", model=MODEL) == 2
    assert moved("pendra_no_capacity_total", model=MODEL) == 0
    assert moved("pendra_ws_frames_total", direction="out") >= 3
    assert moved("pendra_ws_frames_total", direction="in") >= 3 * 2

    def worker_moved(name: str, **labels: str) -> float:
        return value(worker_after, name, **labels) - value(worker_before, name, **labels)

    assert value(worker_after, "pendra_worker_backend_up", backend="ollama",
                 endpoint=emu.base_url) == 1
    assert value(worker_after, "pendra_worker_requests_in_flight") == 0
    assert value(worker_after, "pendra_worker_max_concurrent") == 1
    assert value(worker_after, "pendra_worker_control_plane_connected") == 1
    assert worker_moved("pendra_worker_requests_total", backend="ollama", kind="chat",
                        status="200") == 2
    assert worker_moved("pendra_worker_requests_total", backend="ollama", kind="embed",
                        status="200") == 1
    assert worker_moved("pendra_worker_backend_duration_seconds_count", backend="ollama",
                        kind="chat") == 2
    # Both chats: the worker streams from its backend whether or not the client asked to.
    assert worker_moved("pendra_worker_backend_first_chunk_seconds_count", backend="ollama") == 2


async def _failing_requests(up: Up) -> None:
    """Two requests that log while they are served: a stream whose backend dies mid-answer, and
    a whole answer whose backend dies first (tried again, then 502)."""
    async with httpx.AsyncClient(base_url=up.url, timeout=10 * WAIT,
                                 headers={"Authorization": f"Bearer {up.key}"}) as http:
        streamed = await http.post("/api/v1/chat/completions", headers={
            "X-Request-Id": "req-stream-dies"}, json={
            "model": MODEL, "stream": True,
            "messages": [{"role": "user", "content": "hi [[error-after=2]]"}]})
        assert "error" in streamed.text
        whole = await http.post("/api/v1/chat/completions", headers={
            "X-Request-Id": "req-whole-dies"}, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi [[error-after=0]]"}]})
        assert whole.status_code == 502


async def test_plain_logs_are_one_unwrapped_line_per_record(tmp_path: Path) -> None:
    """With its output in a file, `pendra up` writes one line per log record however long
    (no wrapping at 80 columns), each starting with time, level and logger; the lines written
    while serving a request end with its id; Alembic says nothing at start."""
    async with run_emulator() as emu, pendra_up(tmp_path, emu.base_url) as up:
        await _failing_requests(up)

        def logged() -> list[str]:
            return [line for line in up.lines() if "req-whole-dies" in line]

        await eventually(lambda: len(logged()) >= 2)
    lines = up.lines()
    records = [line for line in lines if LINE_START.match(line)]
    assert any(len(line) > 120 for line in records)  # long lines stay whole
    for line in lines:
        assert LINE_START.match(line) or line.startswith(ANNOUNCEMENTS), line
    assert not any("alembic" in line.lower() for line in lines)
    for request_id in ("req-stream-dies", "req-whole-dies"):
        tagged = [line for line in records if line.endswith(f"[request {request_id}]")]
        assert tagged, lines
    # Every line about the failed whole answer — the retry notice and the error — carries its id.
    about = [line for line in records if "no other connected worker" in line
             or "trying another worker" in line]
    assert len(about) == 2 and all(line.endswith("[request req-whole-dies]") for line in about)


async def test_json_logs_are_one_object_per_line_with_request_ids(tmp_path: Path) -> None:
    """With PENDRA_LOG_FORMAT=json every log line is one JSON object with time, level, logger and
    message, and the lines of a request have its ``request_id``; lines outside a request have
    none."""
    async with run_emulator() as emu, pendra_up(tmp_path, emu.base_url,
                                                PENDRA_LOG_FORMAT="json") as up:
        await _failing_requests(up)

        def logged() -> list[str]:
            return [line for line in up.lines() if "req-whole-dies" in line]

        await eventually(lambda: len(logged()) >= 2)
    entries = []
    for line in up.lines():
        if not line.startswith("{"):
            assert line.startswith(ANNOUNCEMENTS), line  # printed for people, not log records
            continue
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
        entries.append(entry)
    assert any(e["logger"] == "pendra.server.hub" and "connected" in e["message"]
               and "request_id" not in e for e in entries)
    by_request = {e.get("request_id") for e in entries}
    assert {"req-stream-dies", "req-whole-dies"} <= by_request
    retry = [e for e in entries if "trying another worker" in e["message"]]
    assert [e["request_id"] for e in retry] == ["req-whole-dies"]
    assert all(e["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for e in entries)

"""The fleet under faults and load: Ollama restarting under a worker, the control plane restarting
(on SQLite and on PostgreSQL), a worker frozen with its socket still open, and 200 concurrent
streams. Each test gets its own cluster: they break things.

Nothing here asserts a timing. Every wait has a ceiling scaled by ``WAIT`` so that a hang fails
the test instead of the suite; the bounds the product promises (one refresh tick, the heartbeat
timeout, the reconnect backoff) sit well inside those ceilings with the cluster's short settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest
from cluster import Cluster, start_cluster
from openai import AsyncOpenAI
from polling import eventually
from suite_env import POSTGRES_URL, WAIT

CHAT = "llama3.2:latest"
HELLO = [{"role": "user", "content": "hi"}]
# Statuses a request may cleanly fail with while the fleet is degraded or saturated.
CLEAN_FAILURES = {429, 502, 503, 504}


def api(cluster: Cluster, key: str | None = None) -> AsyncOpenAI:
    client = AsyncOpenAI(base_url=cluster.base_url + "/api/v1", api_key=key or cluster.api_key,
                         max_retries=0, timeout=30 * WAIT)
    cluster.on_close(client.close)
    return client


async def chat(http: httpx.AsyncClient, model: str = CHAT, **extra: Any) -> httpx.Response:
    """One chat completion, bounded so that a hang fails the test."""
    async with asyncio.timeout(20 * WAIT):
        return await http.post("/api/v1/chat/completions",
                               json={"model": model, "messages": HELLO, **extra})


def error_message(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) >= {"error", "detail"}, body
    message: str = body["error"]["message"]
    return message


# --- 1. Ollama stops and comes back under a running worker ------------------------------------------


async def test_ollama_restart_withdraws_models_then_restores_them(tmp_path: Path) -> None:
    """When a worker's Ollama stops, its models leave /models (at the first request that finds it
    refusing, or the worker's next refresh tick) and requests for them get a prompt 503 with
    Retry-After that names the worker and the backend (the request that finds out included); a
    model nobody ever served is still 404. When Ollama returns, the same
    models come back and are served again."""
    async with start_cluster(tmp_path, workers=("alpha",)) as cluster:
        emulator = cluster.emulator_of["alpha"]
        served = await cluster.model_ids()
        assert CHAT in served
        async with cluster.http() as http:
            await emulator.stop()

            early = await chat(http)
            assert early.status_code == 503, early.text
            assert int(early.headers["retry-after"]) >= 1
            assert "alpha" in error_message(early)

            await cluster.wait_for_models(lambda ids: not ids, timeout_s=10)
            for stream in (False, True):
                late = await chat(http, stream=stream)
                assert late.status_code == 503, late.text
                assert int(late.headers["retry-after"]) >= 1
                assert late.headers["content-type"].startswith("application/json")
                message = error_message(late)
                assert "alpha" in message and "ollama" in message and "not answering" in message
            async with asyncio.timeout(20 * WAIT):
                embed = await http.post("/api/v1/embeddings",
                                        json={"model": "nomic-embed-text", "input": "x"})
            assert embed.status_code == 503, embed.text
            never = await chat(http, model="never-served:latest")
            assert never.status_code == 404, never.text
            backends = (await cluster.status())["workers"][0]["backends"]
            assert [b["verified"] for b in backends if b["kind"] == "ollama"] == [False]

            await emulator.start()
            await cluster.wait_for_models(lambda ids: ids == served, timeout_s=10)
            again = await chat(http)
            assert again.status_code == 200, again.text
            assert again.headers["x-worker-name"] == "alpha"


async def _status_code_within(http: httpx.AsyncClient, want: int, ceiling_s: float) -> httpx.Response:
    """Chat (non-streaming) until the answer has status ``want``; fails past the ceiling."""
    async def answered() -> httpx.Response | None:
        response = await chat(http)
        return response if response.status_code == want else None

    return await eventually(answered, timeout_s=ceiling_s, interval_s=0.1,
                            what=f"a {want} answer")


async def test_ollama_killed_is_reported_at_once_and_served_again_within_seconds(
        tmp_path: Path) -> None:
    """With a refresh tick far away (30 s), a killed Ollama is still known at once: the first
    request's connection refused marks the backend down (the control plane shows it unverified)
    and requests get 503 with Retry-After; when Ollama returns, the worker's fast re-probe serves
    it again within a few seconds, long before the next tick."""
    async with start_cluster(tmp_path, workers=("alpha",),
                             worker_env={"REFRESH_INTERVAL": "30"}) as cluster:
        emulator = cluster.emulator_of["alpha"]
        async with cluster.http() as http:
            await emulator.kill()
            first = await chat(http)
            # The very first request: the worker's 503 with retry_after_s, relayed as it is.
            assert first.status_code == 503, first.text
            assert 1 <= int(first.headers["retry-after"]) <= 30
            assert "alpha" in error_message(first) and "not answering" in error_message(first)

            async def backend_down() -> bool:
                return not (await cluster.status())["workers"][0]["backends"][0]["verified"]

            await eventually(backend_down, timeout_s=5, interval_s=0.05)
            late = await chat(http, stream=True)
            assert late.status_code == 503, late.text
            assert 1 <= int(late.headers["retry-after"]) <= 30

            await emulator.start()
            again = await _status_code_within(http, 200, ceiling_s=5)
            assert again.headers["x-worker-name"] == "alpha"


async def test_ollama_frozen_mid_stream_ends_the_stream_with_an_error_event(tmp_path: Path) -> None:
    """An Ollama frozen (SIGSTOP) in the middle of a stream, with the refresh tick far away: the
    worker's stall limit (1 s here) ends the client's stream with an error event saying it stalled,
    instead of a silent socket for minutes. Thawed, Ollama serves again within seconds."""
    async with start_cluster(tmp_path, workers=("alpha",),
                             worker_env={"REFRESH_INTERVAL": "30",
                                         "STREAM_STALL_TIMEOUT": "1"}) as cluster:
        emulator = cluster.emulator_of["alpha"]
        assert emulator.process is not None
        stream = await api(cluster).chat.completions.create(
            model=CHAT, stream=True,
            messages=[{"role": "user", "content": "[[tokens=400]] [[delay=0.05]] long story"}])
        received = 0
        try:
            with pytest.raises(openai.APIError, match="stalled") as caught:
                async with asyncio.timeout(10 * WAIT):
                    async for _ in stream:
                        received += 1
                        if received == 3:
                            emulator.process.send_signal(signal.SIGSTOP)
            assert "alpha" in str(caught.value)
            assert 3 <= received < 400
        finally:
            emulator.process.send_signal(signal.SIGCONT)
        async with cluster.http() as http:
            again = await _status_code_within(http, 200, ceiling_s=10)
            assert again.headers["x-worker-name"] == "alpha"


# --- 2. The control plane restarts --------------------------------------------------------------------


def _plain_pg_url(sqlalchemy_url: str, database: str | None = None) -> str:
    url = sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    return url if database is None else url.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def server_database(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """The control plane's store: SQLite in its PENDRA_HOME, or a PostgreSQL database of its own
    (created for the test and dropped after it, connections and all)."""
    if request.param == "sqlite":
        yield {}
        return
    name = "pendra_ft_" + secrets.token_hex(6)
    admin = await asyncio.wait_for(asyncpg.connect(_plain_pg_url(POSTGRES_URL)), 10 * WAIT)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield {"DATABASE_URL": POSTGRES_URL.rsplit("/", 1)[0] + "/" + name}
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _watch_install(cluster: Cluster, op_id: str) -> dict[str, Any]:
    """The last snapshot the install's event stream sends (the live one, as watchers see it)."""
    last: dict[str, Any] = {}
    async with (cluster.admin() as http, asyncio.timeout(60 * WAIT),
                http.stream("GET", f"/api/v1/installs/{op_id}/events") as response):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                last = json.loads(line[len("data: "):])
    return last


def _usage_per_key(cluster: Cluster) -> dict[str, int]:
    usage = json.loads(cluster.cli("usage", "--since", "1d", "--json").stdout)
    return {row["key"]: row["requests"] for row in usage["per_key"]}


def _workers(cluster: Cluster) -> dict[str, dict[str, Any]]:
    rows = json.loads(cluster.cli("workers", "list", "--json").stdout)
    return {row["id"]: row for row in rows}


def _new_key(cluster: Cluster, name: str) -> tuple[str, str]:
    """(id, raw key) of a key made through the CLI."""
    out = cluster.cli("keys", "create", "--name", name).stdout
    raw = re.search(r"pdr_sk_[A-Za-z0-9_-]{43}", out).group(0)  # type: ignore[union-attr]
    return re.search(r"Created key (\S+)", out).group(1), raw  # type: ignore[union-attr]


async def test_control_plane_restart_keeps_state_and_workers_return(
        tmp_path: Path, server_database: dict[str, str]) -> None:
    """After the control plane restarts on the same port and database, both workers reconnect on
    their own (within their backoff) and serve again; API keys (and a revocation), enrolled workers,
    usage records (flushed on shutdown) and install records all survive."""
    async with start_cluster(tmp_path, server_env=server_database) as cluster:
        _, survivor = _new_key(cluster, "survivor")
        doomed_id, doomed = _new_key(cluster, "doomed")
        cluster.cli("keys", "revoke", doomed_id)
        async with cluster.http(key=survivor) as http:
            for _ in range(4):
                response = await chat(http)
                assert response.status_code == 200, response.text
        async with cluster.admin() as admin:
            started = await admin.post("/api/v1/installs", json={"model": "gemma3:1b",
                                                                 "worker": "beta"})
            assert started.status_code == 202, started.text
        install = await _watch_install(cluster, started.json()["id"])
        assert install["state"] == "succeeded", install

        await cluster.restart_server()
        await cluster.wait_for_workers(cluster.workers, timeout_s=60)

        for key in (survivor, cluster.api_key):
            async with cluster.http(key=key) as http:
                response = await chat(http)
                assert response.status_code == 200, response.text
        async with cluster.http(key=doomed) as http:
            refused = await chat(http)
            assert refused.status_code == 401, refused.text
        async with cluster.admin() as admin:
            stored = (await admin.get(f"/api/v1/installs/{install['id']}")).json()
            listed = (await admin.get("/api/v1/installs")).json()["data"]
        assert stored == install
        assert install["id"] in {i["id"] for i in listed}
        assert _usage_per_key(cluster)["survivor"] >= 4
        workers = _workers(cluster)
        assert set(workers) == cluster.worker_ids
        assert all(row["connected"] for row in workers.values())


# --- 3. A worker frozen with its socket open ------------------------------------------------------------


async def test_frozen_worker_is_dropped_and_traffic_moves_to_the_other(tmp_path: Path) -> None:
    """A worker that stops answering heartbeats without closing its socket (SIGSTOP) is dropped
    within the heartbeat bound: the stream it was serving ends with an error event (no hang, no
    silent end), and new requests go to the other worker. Thawed, it reconnects and serves again."""
    async with start_cluster(tmp_path) as cluster:
        stream = await api(cluster).chat.completions.create(
            model=CHAT, stream=True,
            messages=[{"role": "user", "content": "[[tokens=400]] [[delay=0.05]] long story"}])
        frozen = stream.response.headers["x-worker-name"]
        other = next(name for name in cluster.workers if name != frozen)
        received = 0
        cluster.signal_worker(frozen, signal.SIGSTOP)
        try:
            with pytest.raises(openai.APIError):
                async with asyncio.timeout(20 * WAIT):
                    async for _ in stream:
                        received += 1
            assert received < 400

            async def frozen_dropped() -> bool:
                return frozen not in {w["name"] for w in (await cluster.status())["workers"]}

            await eventually(frozen_dropped, timeout_s=20, interval_s=0.1)
            async with cluster.http() as http:
                for _ in range(3):
                    response = await chat(http)
                    assert response.status_code == 200, response.text
                    assert response.headers["x-worker-name"] == other
        finally:
            cluster.signal_worker(frozen, signal.SIGCONT)
        await cluster.wait_for_workers([frozen], timeout_s=60)


# --- 4. Load ------------------------------------------------------------------------------------------------

STREAMS = 200
# Every ABANDON_EVERY-th client reads two events and hangs up: cancellation is part of the load.
ABANDON_EVERY = 10
# A socket, task or buffer leaked per request would show as at least this many extra sockets or MiB
# after 200 requests; anything below is noise (keep-alive connections closing, allocator slack).
SOCKET_SLACK = 4
RSS_SLACK_MIB = 64.0


def _socket_count(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except FileNotFoundError:
            pass  # closed while we looked
    return count


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


async def _one_stream(http: httpx.AsyncClient, n: int) -> str:
    """One streaming chat; how it ended: done, abandoned, error-event or http-<status>.

    Fails the test on anything unclean: a stream that ends without [DONE] or an error event, a
    malformed event, or a non-200 status that is not a JSON error a client can act on."""
    body = {"model": CHAT, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"[[tokens=30]] [[delay=0.01]] client {n}"}]}
    async with http.stream("POST", "/api/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            assert response.status_code in CLEAN_FAILURES, (response.status_code, response.text)
            assert "error" in response.json()
            return f"http-{response.status_code}"
        events = 0
        finished = False
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                assert line == "" or line.startswith(":"), line
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                assert finished, "[DONE] before a finish_reason"
                return "done"
            event = json.loads(data)
            if "error" in event:
                return "error-event"
            events += 1
            finished = finished or any(c.get("finish_reason") for c in event["choices"])
            if n % ABANDON_EVERY == 0 and events == 2:
                return "abandoned"
        raise AssertionError(f"stream {n} ended after {events} events without [DONE] or an error")


async def _wave(cluster: Cluster, count: int) -> Counter[str]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=cluster.base_url, limits=limits, timeout=30 * WAIT,
                                 headers={"Authorization": f"Bearer {cluster.api_key}"}) as http:
        async with asyncio.timeout(60 * WAIT):
            outcomes = await asyncio.gather(*(_one_stream(http, n) for n in range(count)))
    return Counter(outcomes)


async def _settled(cluster: Cluster, pid: int, sockets_at_most: int) -> int:
    """Wait until no request is in flight or waiting and the sockets are back down; their count.

    Fails (naming the numbers) when that does not happen within the ceiling: a leak."""
    busy = sockets = -1

    async def settled() -> bool:
        nonlocal busy, sockets
        status = await cluster.status()
        busy = sum(w["in_flight"] for w in status["workers"]) + status["waiting_requests"]
        sockets = _socket_count(pid)
        return busy == 0 and sockets <= sockets_at_most

    try:
        await eventually(settled, timeout_s=20, interval_s=0.2)
    except TimeoutError:
        raise AssertionError(f"control plane did not settle: {busy} request(s) busy, "
                             f"{sockets} sockets open (at most {sockets_at_most} expected)") from None
    return sockets


async def test_200_concurrent_streams_end_cleanly_without_leaks(tmp_path: Path) -> None:
    """200 concurrent streaming clients (one in ten hanging up early) through one control plane and
    two workers: every stream ends in [DONE], an SSE error event or a clean HTTP error — never a hang
    or a silent truncation — and afterwards the control plane holds no more sockets than before and
    its memory does not keep growing from one wave to the next."""
    async with start_cluster(tmp_path, worker_env={"MAX_CONCURRENT": "64"}) as cluster:
        assert cluster.server.process is not None
        pid = cluster.server.process.pid
        warm = await _wave(cluster, 50)
        assert warm["done"] > 0, warm
        baseline_sockets = await _settled(cluster, pid, 1_000)
        baseline_rss = _rss_mib(pid)

        outcomes = await _wave(cluster, STREAMS)
        assert sum(outcomes.values()) == STREAMS
        assert outcomes["abandoned"] == STREAMS // ABANDON_EVERY, outcomes
        assert outcomes["done"] >= STREAMS // 2, outcomes
        await _settled(cluster, pid, baseline_sockets + SOCKET_SLACK)
        first_rss = _rss_mib(pid)

        again = await _wave(cluster, STREAMS)
        assert again["done"] >= STREAMS // 2, again
        await _settled(cluster, pid, baseline_sockets + SOCKET_SLACK)
        second_rss = _rss_mib(pid)
        assert first_rss <= baseline_rss + RSS_SLACK_MIB, (baseline_rss, first_rss)
        assert second_rss <= first_rss + RSS_SLACK_MIB / 2, (first_rss, second_rss)
        assert cluster.server.process.returncode is None

"""The worker's own /metrics: off by default, local by default, only GET /metrics, a taken port
refused at start-up, and the backend's state read at scrape time (against the Ollama emulator)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from pendra.backends.registry import BackendRegistry
from pendra.config import WorkerSettings
from pendra.errors import CannotListen
from pendra.testing.servers import EmulatorProcess, free_port, run_emulator
from pendra.worker.daemon import run_worker
from pendra.worker.metrics import WorkerMetrics, bind_metrics, serving_metrics
from polling import eventually
from suite_env import WAIT


def worker_settings(endpoint: str, **changes: object) -> WorkerSettings:
    settings = WorkerSettings(
        server_ws_url=f"ws://127.0.0.1:{free_port()}", private_key="", worker_id="wrk-test",
        worker_name="alpha", models=None, max_concurrent=3, ollama_endpoint=endpoint,
        refresh_interval_s=0.2, ollama_num_ctx_cap=0, heartbeat_interval_s=5.0,
        heartbeat_timeout_s=15.0)
    return replace(settings, **changes)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorProcess]:
    async with run_emulator() as running:
        yield running


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_off_and_local_by_default(tmp_path: Path) -> None:
    """With no configuration the worker opens no metrics port, and when one is set it listens
    on 127.0.0.1."""
    from pendra import config as cfg
    from pendra.home import Home

    home = Home(tmp_path / "home")
    settings = cfg.load_worker(home, {}, require_key=False)
    assert (settings.metrics_port, settings.metrics_host) == (0, "127.0.0.1")
    on = cfg.load_worker(home, {"METRICS_PORT": "9464"}, require_key=False)
    assert (on.metrics_port, on.metrics_host) == (9464, "127.0.0.1")


def test_a_taken_port_is_one_clear_error() -> None:
    """Binding a port something else holds fails with CannotListen naming it and the key."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CannotListen, match=rf"127\.0\.0\.1:{port}.*metrics_port"):
            bind_metrics("127.0.0.1", port)


async def test_serves_metrics_only_and_reads_the_backend_live(emulator: EmulatorProcess) -> None:
    """GET /metrics answers in the Prometheus text format with the backend up; another path is
    404, another method 405; when the backend stops answering, the next scrape says it is down."""
    settings = worker_settings(emulator.base_url)
    registry = BackendRegistry(settings)
    try:
        await registry.refresh()
        metrics = WorkerMetrics(registry)
        async with serving_metrics(metrics, bind_metrics("127.0.0.1", 0)) as url:
            async with httpx.AsyncClient(timeout=10 * WAIT) as http:
                response = await http.get(url)
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
                up = ("pendra_worker_backend_up",
                      frozenset({("backend", "ollama"), ("endpoint", emulator.base_url)}))
                assert samples(response.text)[up] == 1
                assert (await http.get(url.replace("/metrics", "/"))).status_code == 404
                assert (await http.post(url)).status_code == 405
                head = await http.head(url)
                assert head.status_code == 200 and head.content == b""
                await emulator.stop()
                await registry.refresh()
                assert samples((await http.get(url)).text)[up] == 0
    finally:
        await registry.aclose()


async def test_run_worker_serves_metrics_while_it_runs(emulator: EmulatorProcess) -> None:
    """`run_worker` with a metrics port serves it while it runs (not connected: no control plane
    listens) and closes it when stopped."""
    port = free_port()
    settings = worker_settings(emulator.base_url, metrics_port=port)
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop=stop))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=10 * WAIT) as http:
            async def scraped() -> str | None:
                try:
                    response = await http.get(url)
                except httpx.ConnectError:
                    return None
                # The runner is attached once discovery has run; until then only backends show.
                ready = response.status_code == 200 and "pendra_worker_max_concurrent" in response.text
                return response.text if ready else None

            text = await eventually(scraped, timeout_s=20)
            found = samples(text)
            assert found[("pendra_worker_control_plane_connected", frozenset())] == 0
            assert found[("pendra_worker_requests_in_flight", frozenset())] == 0
            assert found[("pendra_worker_max_concurrent", frozenset())] == 3
    finally:
        stop.set()
        await asyncio.wait_for(task, 20 * WAIT)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=5 * WAIT) as http:
            await http.get(url)


async def test_a_slow_or_bloated_request_is_refused() -> None:
    """Headers larger than the limit get 431; a request that is not HTTP gets 400; the port keeps
    serving scrapes after both."""
    metrics = WorkerMetrics(_NoBackends())
    async with serving_metrics(metrics, bind_metrics("127.0.0.1", 0)) as url:
        port = int(url.split(":")[2].split("/")[0])
        for sent, status in ((b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
                              b"431"), (b"hello there\r\n\r\n", b"400")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(sent)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10 * WAIT)
            writer.close()
            assert answer.split(b" ")[1] == status, answer
        async with httpx.AsyncClient(timeout=10 * WAIT) as http:
            assert (await http.get(url)).status_code == 200


class _NoBackends:
    def statuses(self) -> list[object]:
        return []

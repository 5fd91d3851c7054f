"""``GET /metrics`` on a real control plane with fake workers on real WebSockets: who may read it,
and that each counter and gauge moves by exactly what the test did. Every scrape is parsed with
the Prometheus client's own parser."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api_fixtures import (ADMIN_TOKEN, CHAT_MODEL, EMBED_MODEL, TIMEOUT_S, USAGE, Api, FakeWorker,
                          fail_with, fleet, hold, running_api)
from pendra.protocol.frames import Install, OpDone, OpFailed
from polling import eventually

METRICS_TOKEN = "metrics-token-for-tests-0123456789"
HELLO = [{"role": "user", "content": "hi"}]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels (parsed by prometheus_client)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def matching(samples: Samples, name: str, **labels: str) -> Iterator[float]:
    wanted = set(labels.items())
    return (v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, metrics_token=METRICS_TOKEN) as running:
        yield running


async def scrape(api: Api, token: str = METRICS_TOKEN) -> Samples:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S) as http:
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def client(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S, headers=api.headers)


async def test_metrics_need_the_metrics_token_or_the_admin_token(api: Api) -> None:
    """No token, a wrong one, an API key: 401 with the error shape, the request id and a Bearer
    challenge, never a metric; the metrics token and this start's admin token read them."""
    async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S) as http:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"},
                        {"Authorization": f"Bearer {api.key}"}, {"x-api-key": METRICS_TOKEN},
                        {"Authorization": f"Basic {METRICS_TOKEN}"}):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.headers["x-request-id"]
            assert "metrics_token" in refused.json()["error"]["message"]
            assert "pendra_" not in refused.text
        for token in (METRICS_TOKEN, ADMIN_TOKEN):
            ok = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200 and "pendra_requests" in ok.text
        schema = (await http.get("/api/v1/openapi.json")).json()
        assert "/metrics" not in schema["paths"]


async def test_without_a_metrics_token_only_the_admin_token_reads(tmp_path: Path) -> None:
    """With no metrics_token configured, an empty bearer is no key to the metrics."""
    async with running_api(tmp_path) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S) as http:
            assert (await http.get("/metrics", headers={"Authorization": "Bearer"})
                    ).status_code == 401
        assert value(await scrape(api, ADMIN_TOKEN), "pendra_workers_connected") == 0


async def test_requests_tokens_latency_and_frames_move_by_exactly_the_requests(api: Api) -> None:
    """Two chats (one streamed), one embedding and one unknown model move the request counter,
    the token counters, the latency and first-token histograms and the /ws/gpu frame counters by
    exactly those requests; labels carry kind, served model, worker and status, and a model
    nobody serves never becomes a label."""
    async with fleet(api, FakeWorker("alpha")) as (alpha,):
        before = await scrape(api)
        async with client(api) as http:
            assert (await http.post("/api/v1/chat/completions", json={
                "model": "llama3.2", "messages": HELLO})).status_code == 200
            assert (await http.post("/api/v1/chat/completions", json={
                "model": "llama3.2", "messages": HELLO, "stream": True})).status_code == 200
            assert (await http.post("/api/v1/embeddings", json={
                "model": EMBED_MODEL.id, "input": "x"})).status_code == 200
            assert (await http.post("/api/v1/chat/completions", json={
                "model": "no-such-model-anywhere", "messages": HELLO})).status_code == 404
        after = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    chat = dict(kind="chat", model=CHAT_MODEL.id)
    embed = dict(kind="embed", model=EMBED_MODEL.id)
    worker = dict(worker=alpha.worker_id, worker_name="alpha")
    assert moved("pendra_requests_total", **chat, **worker, status="200") == 2
    assert moved("pendra_requests_total", **embed, **worker, status="200") == 1
    assert moved("pendra_requests_total", kind="chat", model="", worker="", worker_name="",
                 status="404") == 1
    assert not any("no-such-model" in str(labels) for _, labels in after)
    assert moved("pendra_request_duration_seconds_count", **chat) == 2
    assert moved("pendra_request_duration_seconds_count", **embed) == 1
    assert moved("pendra_time_to_first_token_seconds_count", **chat) == 1  # the streamed one
    assert moved("pendra_prompt_tokens_total", **chat) == 2 * USAGE["prompt_tokens"]
    assert moved("pendra_completion_tokens_total", **chat) == 2 * USAGE["completion_tokens"]
    assert moved("pendra_prompt_tokens_total", **embed) == 4
    assert moved("pendra_queue_wait_seconds_count", model=CHAT_MODEL.id) == 2
    # Three requests out; the non-streamed answers are Chunk + End, the streamed one 4 Chunks +
    # End (the fake worker sends one frame per message); pings and pongs may add to both.
    assert moved("pendra_ws_frames_total", direction="out") >= 3
    assert moved("pendra_ws_frames_total", direction="in") >= 2 + 2 + 5
    assert moved("pendra_ws_bytes_total", direction="in") > 0


async def test_gauges_read_the_fleet_at_scrape_time(api: Api) -> None:
    """Workers connected, each one's in-flight and capacity, and the requests waiting for a slot
    are what the fleet is doing at the moment of the scrape."""
    release = asyncio.Event()
    async with fleet(api, FakeWorker("busy", script=hold(release), max_concurrent=1)) as (busy,):
        idle = await scrape(api)
        labels = dict(worker=busy.worker_id, worker_name="busy")
        assert value(idle, "pendra_workers_connected") == 1
        assert value(idle, "pendra_worker_capacity", **labels) == 1
        assert value(idle, "pendra_worker_in_flight", **labels) == 0
        async with client(api) as http:
            calls = [asyncio.create_task(http.post("/api/v1/chat/completions", json={
                "model": "llama3.2", "messages": HELLO})) for _ in range(2)]
            await eventually(lambda: api.app.state.router.waiting == 1)
            loaded = await scrape(api)
            assert value(loaded, "pendra_worker_in_flight", **labels) == 1
            assert value(loaded, "pendra_queue_depth") == 1
            release.set()
            assert [(await c).status_code for c in calls] == [200, 200]
        waited = await scrape(api)
        assert value(waited, "pendra_queue_depth") == 0
        assert value(waited, "pendra_queue_wait_seconds_count", model=CHAT_MODEL.id) == 2
        assert value(waited, "pendra_queue_wait_seconds_sum", model=CHAT_MODEL.id) > 0
    assert value(await scrape(api), "pendra_workers_connected") == 0


async def test_no_capacity_and_retries_are_counted(tmp_path: Path) -> None:
    """A request refused 503 because the only slot stayed busy counts once as no capacity (and
    once as a 503 request); a request tried again on a second worker counts once as a retry."""
    release = asyncio.Event()
    async with running_api(tmp_path, queue_timeout_s=0.2, metrics_token=METRICS_TOKEN) as api:
        async with fleet(api, FakeWorker("busy", script=hold(release))):
            async with client(api) as http:
                first = asyncio.create_task(http.post("/api/v1/chat/completions", json={
                    "model": "llama3.2", "messages": HELLO}))
                await eventually(lambda: any(w.in_flight for w in api.app.state.hub.connected()))
                second = await http.post("/api/v1/chat/completions", json={
                    "model": "llama3.2", "messages": HELLO})
                assert second.status_code == 503
                release.set()
                assert (await first).status_code == 200
            samples = await scrape(api)
            assert value(samples, "pendra_no_capacity_total", model=CHAT_MODEL.id) == 1
            assert sum(matching(samples, "pendra_requests_total", status="503")) == 1
            assert value(samples, "pendra_retries_total", model=CHAT_MODEL.id) == 0
        broken = FakeWorker("broken", script=fail_with(500, "GPU on fire"))
        healthy = FakeWorker("healthy", max_concurrent=2)
        async with fleet(api, broken, healthy):
            api.app.state.hub.get(healthy.worker_id).in_flight = 1  # broken is picked first
            async with client(api) as http:
                assert (await http.post("/api/v1/chat/completions", json={
                    "model": "llama3.2", "messages": HELLO})).status_code == 200
            api.app.state.hub.get(healthy.worker_id).in_flight = 0
            samples = await scrape(api)
    assert value(samples, "pendra_retries_total", model=CHAT_MODEL.id) == 1
    assert value(samples, "pendra_no_capacity_total", model=CHAT_MODEL.id) == 1


async def test_installs_are_counted_by_outcome(api: Api) -> None:
    """Each install that ends counts once under its outcome."""
    async with fleet(api, FakeWorker("alpha")) as (alpha,):
        async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S, headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            for answer in ("done", "failed"):
                started = await http.post("/api/v1/installs",
                                          json={"model": "gemma3:1b", "worker": "alpha"})
                assert started.status_code == 202, started.text
                op_id = started.json()["id"]
                await alpha.wait_for(lambda: any(isinstance(f, Install) and f.op_id == op_id
                                                 for f in alpha.ops))
                await alpha.send(OpDone(op_id=op_id) if answer == "done" else
                                 OpFailed(op_id=op_id, message="disk full", status=500))

                async def ended() -> bool:
                    state = (await http.get(f"/api/v1/installs/{op_id}")).json()["state"]
                    return state in ("succeeded", "failed")

                await eventually(ended)
        samples = await scrape(api)
    assert value(samples, "pendra_installs_total", outcome="succeeded") == 1
    assert value(samples, "pendra_installs_total", outcome="failed") == 1


async def test_usage_backlog_and_drops_are_read_from_the_writer(api: Api) -> None:
    """The usage writer's backlog is a gauge and its dropped records a counter, both present
    from the first scrape."""
    samples = await scrape(api)
    assert value(samples, "pendra_usage_backlog_records") == 0
    assert ("pendra_usage_dropped_records_total", frozenset()) in samples
    assert ("pendra_usage_rejected_records_total", frozenset()) in samples


async def test_two_apps_in_one_process_keep_their_own_counts(api: Api, tmp_path: Path) -> None:
    """Each app has its own registry: a request on one never shows on the other."""
    async with running_api(tmp_path / "other", metrics_token=METRICS_TOKEN) as other:
        async with fleet(api, FakeWorker("alpha")):
            async with client(api) as http:
                assert (await http.post("/api/v1/chat/completions", json={
                    "model": "llama3.2", "messages": HELLO})).status_code == 200
        assert sum(matching(await scrape(api), "pendra_requests_total")) == 1
        assert sum(matching(await scrape(other), "pendra_requests_total")) == 0


# --- the documentation and the dashboard name exactly what is exported ----------------------------

ROOT = Path(__file__).resolve().parents[2]


def exported_names(text: str) -> set[str]:
    """Pendra's metric names in a scrape, as a query names them (counters with ``_total``)."""
    return {f.name + ("_total" if f.type == "counter" else "")
            for f in text_string_to_metric_families(text) if f.name.startswith("pendra_")}


class _NoBackends:
    def statuses(self) -> list[object]:
        return []


class _Idle:
    in_flight = 0
    max_concurrent = 1
    connected = False


async def test_docs_and_dashboard_use_exactly_the_exported_names(api: Api) -> None:
    """docs/observability.md lists every metric the control plane and a worker export and no
    other; every metric the Grafana dashboard queries is one of them."""
    from pendra.worker.metrics import WorkerMetrics

    async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S) as http:
        server = (await http.get("/metrics", headers={
            "Authorization": f"Bearer {METRICS_TOKEN}"})).text
    worker = WorkerMetrics(_NoBackends())  # type: ignore[arg-type]
    worker.attach(_Idle(), _Idle())  # type: ignore[arg-type]
    exported = exported_names(server) | exported_names(worker.render().decode())
    docs = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(pendra_\w+)` \|", docs, flags=re.MULTILINE))
    assert documented == exported
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    queried = {re.sub(r"_(bucket|sum|count)$", "", name)
               for panel in dashboard["panels"] for target in panel.get("targets", [])
               for name in re.findall(r"\bpendra_\w+", target["expr"])}
    assert queried and queried <= exported, queried - exported

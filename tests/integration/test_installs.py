"""Curated installs and removals end to end: API → control plane → /ws/gpu → worker → Ollama pull.

The workers refresh only every 60 s here, so a model that appears right after an install proves
the worker re-discovered at once instead of waiting for its tick.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from cluster import Cluster, start_cluster
from polling import eventually
from suite_env import WAIT

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with start_cluster(tmp_path_factory.mktemp("installs"),
                             worker_env={"REFRESH_INTERVAL": "60"}) as running:
        yield running


async def _events(http: httpx.AsyncClient, op_id: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(60 * WAIT):
        async with http.stream("GET", f"/api/v1/installs/{op_id}/events") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
    return seen


def pulled_some(http: httpx.AsyncClient, op_id: str) -> Callable[[], Awaitable[bool]]:
    """A check for ``eventually``: the install ``op_id`` has reported some bytes."""
    async def check() -> bool:
        return (await http.get(f"/api/v1/installs/{op_id}")).json()["completed"] > 0
    return check


async def _start(http: httpx.AsyncClient, model: str, worker: str = "alpha",
                 expect: int = 202) -> dict[str, Any]:
    response = await http.post("/api/v1/installs", json={"model": model, "worker": worker})
    assert response.status_code == expect, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_install_streams_monotonic_progress_to_success(fleet: Cluster) -> None:
    """A watcher sees progress that never goes backwards, then success; the model is served at once."""
    await fleet.emulator_of["alpha"].configure(pull_bytes_per_s=400_000_000)
    async with fleet.admin() as http:
        op = await _start(http, "gemma3:1b")
        events = await _events(http, op["id"])
        done = [e["completed"] for e in events]
        assert done == sorted(done)
        assert len({e["completed"] for e in events if e["state"] == "running"}) >= 3
        assert events[-1]["state"] == "succeeded"
        assert events[-1]["total"] >= 815_000_000
        # Late watcher: the snapshot of the finished install, straight away.
        late = await _events(http, op["id"])
        assert [e["state"] for e in late] == ["succeeded"]
    assert "gemma3:1b" in await fleet.model_ids()
    async with fleet.http() as api:
        reply = await api.post("/api/v1/chat/completions", json={
            "model": "gemma3:1b", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200 and reply.headers["x-worker-name"] == "alpha"


async def test_duplicate_install_attaches(fleet: Cluster) -> None:
    """A second install of the same model on the same worker joins the running one."""
    await fleet.emulator_of["alpha"].configure(pull_bytes_per_s=200_000_000)
    async with fleet.admin() as http:
        first = await _start(http, "qwen2.5:0.5b")
        second = await _start(http, "qwen2.5:0.5b:q4_K_M", worker="alpha")
        assert second["id"] == first["id"]
        assert (await _events(http, first["id"]))[-1]["state"] == "succeeded"


async def test_unknown_tag_fails_with_ollamas_message(fleet: Cluster) -> None:
    """A catalogued tag the registry does not have fails with Ollama's own message."""
    async with fleet.admin() as http:
        bad = await _start(http, "qwen3:8b:q8_0", worker="beta")
        assert bad["model_tag"] == "qwen3:8b-q8_0"  # catalogued, but not in the registry
        final = (await _events(http, bad["id"]))[-1]
        assert final["state"] == "failed"
        assert final["error"] == "pull model manifest: file does not exist"


async def test_cancel_stops_the_pull_at_ollama(fleet: Cluster) -> None:
    """Cancelling a running install aborts the pull on the worker's Ollama."""
    emu = fleet.emulator_of["beta"]
    await emu.configure(pull_bytes_per_s=20_000_000)
    await emu.reset_stats()
    async with fleet.admin() as http:
        op = await _start(http, "llama3.2:1b", worker="beta")
        await eventually(pulled_some(http, op["id"]), timeout_s=20, interval_s=0.1)
        assert (await http.post(f"/api/v1/installs/{op['id']}/cancel")).status_code == 200
        assert (await _events(http, op["id"]))[-1]["state"] == "cancelled"
    async def pull_cancelled() -> bool:
        return (await emu.stats())["pulls_cancelled"] > 0

    await eventually(pull_cancelled, interval_s=0.1)


async def test_remove_and_remove_missing(fleet: Cluster) -> None:
    """Remove deletes the model on that worker's Ollama and it leaves /models; a second remove is 404."""
    async with fleet.admin() as http:
        response = await http.delete("/api/v1/workers/beta/models/llava:7b")
        assert response.status_code == 204, response.text
        assert "llava:7b" not in {m["name"] for m in await _tags(fleet, "beta")}
        assert (await http.delete("/api/v1/workers/beta/models/llava:7b")).status_code == 404
    ids = await fleet.model_ids()
    assert "llava:7b" in ids  # alpha still has it
    async with fleet.admin() as http:
        assert (await http.delete("/api/v1/workers/alpha/models/llava:7b")).status_code == 204
    assert "llava:7b" not in await fleet.model_ids()


async def _tags(fleet: Cluster, worker: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=fleet.emulator_of[worker].base_url) as http:
        models: list[dict[str, Any]] = (await http.get("/api/tags")).json()["models"]
        return models


async def test_refusals(fleet: Cluster) -> None:
    """Non-Ollama catalogue entries, unknown models and unknown workers are clear 4xx; no key is 401."""
    async with fleet.admin() as http:
        refused = await http.post("/api/v1/installs", json={"model": "qwen2.5:1.5b-gguf",
                                                                   "worker": "alpha"})
        assert refused.status_code == 400 and "pendra backend" in refused.text
        unknown = await http.post("/api/v1/installs", json={"model": "nope", "worker": "alpha"})
        assert unknown.status_code == 404 and "catalogue" in unknown.text
        nobody = await http.post("/api/v1/installs", json={"model": "gemma3:1b", "worker": "ghost"})
        assert nobody.status_code == 404 and "not connected" in nobody.text
    async with fleet.http() as api:  # an API key is not an admin credential
        assert (await api.post("/api/v1/installs", json={"model": "gemma3:1b",
                                                          "worker": "alpha"})).status_code == 401


async def test_ollama_dying_mid_pull_fails_the_install(tmp_path) -> None:
    """Ollama exiting during a pull ends the install as failed, saying Ollama went away."""
    async with start_cluster(tmp_path, workers=("alpha",)) as cluster:
        emu = cluster.emulator_of["alpha"]
        await emu.configure(pull_bytes_per_s=200_000_000, die_during_pull=True)
        async with cluster.admin() as http:
            op = await _start(http, "gemma3:1b")
            final = (await _events(http, op["id"]))[-1]
        assert final["state"] == "failed"
        assert "Ollama" in final["error"]


async def test_worker_disconnect_mid_pull_fails_the_install(tmp_path) -> None:
    """A worker dropping during a pull ends the install as failed with that reason, not 'running'."""
    async with start_cluster(tmp_path, workers=("alpha",)) as cluster:
        await cluster.emulator_of["alpha"].configure(pull_bytes_per_s=20_000_000)
        async with cluster.admin() as http:
            op = await _start(http, "gemma3:1b")
            await eventually(pulled_some(http, op["id"]), timeout_s=20, interval_s=0.1)
            await cluster.kill_worker("alpha")
            final = (await _events(http, op["id"]))[-1]
            assert final["state"] == "failed"
            assert "disconnected" in final["error"]
            stored = (await http.get(f"/api/v1/installs/{op['id']}")).json()
            assert stored["state"] == "failed"

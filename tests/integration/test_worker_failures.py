"""Workers failing under real traffic: killed before the first byte, killed mid-stream, leaving and
coming back, or presenting the wrong key. Each test gets its own cluster: they break things."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai import AsyncOpenAI

from polling import eventually
from suite_env import WAIT
from cluster import Cluster, start_cluster


def api(cluster: Cluster) -> AsyncOpenAI:
    client = AsyncOpenAI(base_url=cluster.base_url + "/api/v1", api_key=cluster.api_key,
                         max_retries=0, timeout=30 * WAIT)
    cluster.on_close(client.close)
    return client


async def _worker_holding_request(cluster: Cluster, path: str) -> str:
    """The name of the worker whose emulator has received a request on ``path``."""
    async def receiver() -> str | None:
        for name, emu in cluster.emulator_of.items():
            if await emu.requests(path):
                return name
        return None

    return await eventually(receiver, interval_s=0.05)


async def test_worker_killed_before_first_byte_is_retried_elsewhere(tmp_path) -> None:
    """A worker that dies before its first byte is replaced: the request succeeds on the other."""
    async with start_cluster(tmp_path) as cluster:
        for emu in cluster.emulators:
            await emu.configure(latency_s=1.5)
        task = asyncio.create_task(api(cluster).chat.completions.with_raw_response.create(
            model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}]))
        doomed = await _worker_holding_request(cluster, "/api/chat")
        await cluster.kill_worker(doomed)
        raw = await asyncio.wait_for(task, 30 * WAIT)
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-worker-name"] != doomed


async def test_worker_killed_mid_stream_gives_an_error_not_a_hang(tmp_path) -> None:
    """A worker dying mid-stream ends the client's stream with an error event, promptly."""
    async with start_cluster(tmp_path) as cluster:
        stream = await api(cluster).chat.completions.create(
            model="llama3.2:latest", stream=True,
            messages=[{"role": "user", "content": "[[tokens=400]] [[delay=0.05]] long story"}])
        received = 0
        with pytest.raises(openai.APIError):
            async with asyncio.timeout(20 * WAIT):
                async for _ in stream:
                    received += 1
                    if received == 3:
                        name = await _worker_holding_request(cluster, "/api/chat")
                        await cluster.kill_worker(name)
        assert received >= 3


async def test_models_follow_workers_connecting_and_leaving(tmp_path) -> None:
    """A worker's models leave /models within seconds of it dying and return when it reconnects."""
    async with start_cluster(tmp_path) as cluster:
        only_beta = {"name": "beta-only:latest", "family": "llama", "parameter_size": "1B",
                     "quantization_level": "Q4_0", "context_length": 4096,
                     "capabilities": ["completion"], "size": 1000, "format": "gguf"}
        await cluster.emulator_of["beta"].add_model(only_beta)
        await cluster.wait_for_models(lambda ids: "beta-only:latest" in ids)
        await cluster.kill_worker("beta")
        await cluster.wait_for_models(lambda ids: "beta-only:latest" not in ids)
        await cluster.start_worker("beta")
        await cluster.wait_for_models(lambda ids: "beta-only:latest" in ids)


async def test_wrong_key_is_refused_and_worker_stops(tmp_path) -> None:
    """A worker presenting a key the control plane does not know is refused and exits non-zero."""
    async with start_cluster(tmp_path, workers=("alpha",)) as cluster:
        code, output = await cluster.run_impostor_worker()
        assert code != 0
        assert "authentication refused" in output.lower()

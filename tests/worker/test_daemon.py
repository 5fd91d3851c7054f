"""The worker daemon's pieces that need no control plane, against the Ollama emulator.

``build_inventory``, the local helpers the CLI calls (list, backends, install, remove) and
``run_worker``'s life cycle: it keeps retrying an unreachable control plane until stopped, leaves no
task behind, and ends with the error itself when the control plane refuses its key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio
from websockets.asyncio.server import ServerConnection, serve

from suite_env import ONLY_OLLAMA
from pendra.backends.base import InstallProgress
from pendra.backends.registry import BackendRegistry
from pendra.config import WorkerSettings
from pendra.errors import AuthenticationFailed, BackendUnavailable, InstallFailed, ModelNotFound
from pendra.protocol.close import CloseReason
from pendra.protocol.frames import Inventory, dump_frame, parse_frame
from pendra.testing.servers import EmulatorProcess, free_port, run_emulator
from pendra.worker.daemon import build_inventory, run_worker
from pendra.worker.local import install_local, local_backends, local_models, remove_local
from polling import eventually
from suite_env import WAIT

DEFAULT_MODELS = {"llama3.2:latest", "qwen3:8b", "nomic-embed-text:latest", "llava:7b",
                  "x/z-image-turbo:latest"}


def worker_settings(endpoint: str, **changes: object) -> WorkerSettings:
    settings = WorkerSettings(
        server_ws_url=f"ws://127.0.0.1:{free_port()}", private_key="", worker_id="wrk-test",
        worker_name="alpha", models=None, max_concurrent=3, ollama_endpoint=endpoint,
        refresh_interval_s=0.2, ollama_num_ctx_cap=0, heartbeat_interval_s=5.0,
        heartbeat_timeout_s=15.0, backends_disabled=ONLY_OLLAMA)
    return replace(settings, **changes)


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorProcess]:
    async with run_emulator() as running:
        yield running


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# --- build_inventory ---------------------------------------------------------------------------------


async def test_inventory_lists_backends_models_and_capacity(emulator: EmulatorProcess) -> None:
    """The inventory carries the verified backend, every model with metadata, and max_concurrent."""
    settings = worker_settings(emulator.base_url)
    registry = BackendRegistry(settings)
    try:
        await registry.refresh()
        inventory = build_inventory(registry, settings)
    finally:
        await registry.aclose()
    assert parse_frame(dump_frame(inventory)) == inventory  # valid on the wire
    assert inventory.max_concurrent == 3
    [backend] = [b for b in inventory.backends if b.kind == "ollama"]
    assert backend.kind == "ollama" and backend.verified and backend.version == "0.32.15"
    # The kinds BACKENDS_DISABLED turns off are still reported, with the reason.
    assert [(b.kind, b.verified, b.reason) for b in inventory.backends if b.kind != "ollama"] == [
        ("lmstudio", False, "disabled by BACKENDS_DISABLED"),
        ("vllm", False, "disabled by BACKENDS_DISABLED"),
        ("speaches", False, "disabled by BACKENDS_DISABLED")]
    models = {m.id: m for m in inventory.models}
    assert set(models) == DEFAULT_MODELS
    assert models["llama3.2:latest"].context_length == 131072
    assert models["llama3.2:latest"].capabilities == ("completion", "tools")


async def test_inventory_applies_models_filter_and_empties_when_not_serving(
        emulator: EmulatorProcess) -> None:
    """MODELS limits what is offered; a stopping worker offers nothing but still shows its backends."""
    settings = worker_settings(emulator.base_url, models=("llama3.2", "qwen3:8b"))
    registry = BackendRegistry(settings)
    try:
        await registry.refresh()
        serving = build_inventory(registry, settings)
        stopping = build_inventory(registry, settings, serving=False)
    finally:
        await registry.aclose()
    assert {m.id for m in serving.models} == {"llama3.2:latest", "qwen3:8b"}
    assert stopping.models == [] and stopping.backends == serving.backends


# --- local helpers -------------------------------------------------------------------------------------


async def test_local_models_and_backends_discover_the_emulator(emulator: EmulatorProcess) -> None:
    """One discovery pass lists this host's models and its verified Ollama."""
    settings = worker_settings(emulator.base_url)
    models = await local_models(settings)
    [status] = [s for s in await local_backends(settings) if s.kind == "ollama"]
    assert {m.id for m in models} == DEFAULT_MODELS
    assert status.verified and status.endpoint == emulator.base_url


async def test_local_backends_say_where_they_looked_when_nothing_answers() -> None:
    """With no Ollama running the status is unverified and names every probed endpoint."""
    probes = [closed_url(), closed_url()]
    [status] = [s for s in await local_backends(worker_settings(""), probe_urls=probes)
                if s.kind == "ollama"]
    assert not status.verified and status.tried == tuple(probes) and status.reason
    assert await local_models(worker_settings(""), probe_urls=probes) == []


async def test_install_local_reports_progress_and_the_model_appears(
        emulator: EmulatorProcess) -> None:
    """A local install streams rising progress to success; the model is then listed."""
    settings = worker_settings(emulator.base_url)
    seen: list[InstallProgress] = []
    await install_local(settings, "all-minilm:latest", seen.append)
    done = [p.completed for p in seen]
    assert done == sorted(done) and seen[-1].status == "success"
    assert "all-minilm:latest" in {m.id for m in await local_models(settings)}


async def test_install_local_of_an_unknown_tag_fails_with_ollamas_message(
        emulator: EmulatorProcess) -> None:
    """An unknown tag raises InstallFailed carrying Ollama's own message."""
    with pytest.raises(InstallFailed, match="pull model manifest: file does not exist"):
        await install_local(worker_settings(emulator.base_url), "nosuch:1b", lambda _: None)


async def test_install_local_without_ollama_says_how_to_get_it() -> None:
    """With no Ollama the error names where Pendra looked and where to download Ollama."""
    url = closed_url()
    with pytest.raises(BackendUnavailable, match=f"No Ollama found at {url}; install it from "
                                                 "https://ollama.com/download"):
        await install_local(worker_settings(url), "gemma3:1b", lambda _: None)


async def test_remove_local_deletes_and_refuses_missing_models(emulator: EmulatorProcess) -> None:
    """A removal deletes the model; removing it again is ModelNotFound saying "not installed"."""
    settings = worker_settings(emulator.base_url)
    await remove_local(settings, "qwen3:8b")
    assert "qwen3:8b" not in {m.id for m in await local_models(settings)}
    with pytest.raises(ModelNotFound, match="not installed"):
        await remove_local(settings, "qwen3:8b")


# --- run_worker ------------------------------------------------------------------------------------------


async def _stop_cleanly(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    async with asyncio.timeout(10 * WAIT):
        await task


async def test_run_worker_retries_a_closed_control_plane_until_stopped(
        emulator: EmulatorProcess, caplog: pytest.LogCaptureFixture) -> None:
    """Unreachable control plane: the worker keeps dialling; stop ends it with no task left over."""
    caplog.set_level(logging.INFO, logger="pendra")
    settings = worker_settings(emulator.base_url)
    before = asyncio.all_tasks()
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop=stop))
    await eventually(lambda: "control plane connection" in caplog.text)
    await asyncio.sleep(0.5)  # a few refresh ticks and reconnect attempts
    assert not task.done()
    await _stop_cleanly(task, stop)
    assert asyncio.all_tasks() - {asyncio.current_task()} <= before
    assert "wrk-test" in caplog.text and settings.gpu_ws_url in caplog.text
    assert "backend ollama 0.32.15 at " + emulator.base_url in caplog.text


async def test_run_worker_without_ollama_explains_and_keeps_running(
        caplog: pytest.LogCaptureFixture) -> None:
    """No Ollama at start-up is a clear warning, not an exit: it may be installed later."""
    caplog.set_level(logging.INFO, logger="pendra")
    probes = [closed_url(), closed_url()]
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(worker_settings(""), stop=stop, probe_urls=probes))
    await eventually(lambda: "No Ollama found" in caplog.text)
    assert (f"No Ollama found at {probes[0]} or {probes[1]}; install it from "
            "https://ollama.com/download — it will be found on the next refresh tick") in caplog.text
    assert not task.done()
    await _stop_cleanly(task, stop)


async def test_run_worker_stops_on_a_stop_set_before_it_starts(emulator: EmulatorProcess) -> None:
    """A stop already set ends the worker right after start-up, leaving a caller's registry open."""
    settings = worker_settings(emulator.base_url)
    registry = BackendRegistry(settings)
    stop = asyncio.Event()
    stop.set()
    try:
        async with asyncio.timeout(10 * WAIT):
            await run_worker(settings, stop=stop, registry=registry)
        assert {m.id for m in registry.models()} == DEFAULT_MODELS  # still usable: not closed
        assert isinstance(build_inventory(registry, settings), Inventory)
    finally:
        await registry.aclose()


async def test_run_worker_ends_with_the_error_when_the_key_is_refused(
        emulator: EmulatorProcess) -> None:
    """A control plane closing with "authentication refused" ends run_worker with that error."""
    async def refuse(ws: ServerConnection) -> None:
        await ws.close(int(CloseReason.AUTH_FAILED), "unknown worker")

    async with serve(refuse, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = worker_settings(emulator.base_url, server_ws_url=f"ws://127.0.0.1:{port}")
        with pytest.raises(AuthenticationFailed, match="authentication refused"):
            async with asyncio.timeout(10 * WAIT):
                await run_worker(settings, stop=asyncio.Event())

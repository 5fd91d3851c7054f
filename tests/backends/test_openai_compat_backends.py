"""vLLM, LM Studio and the generic OpenAI-compatible backend: the real backend and registry code
against the emulators (pendra.testing.openai_compat) running as real processes."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pendra.backends.base import InstallProgress
from pendra.backends.lmstudio import LMStudioBackend
from pendra.backends.registry import BackendRegistry
from pendra.backends.vllm import VLLMBackend
from pendra.config import WorkerSettings
from pendra.errors import (BackendRejected, BackendUnavailable, InstallFailed, ModelNotFound,
                           UnsupportedOperation)
from pendra.testing.servers import EmulatorProcess, free_port, run_openai_compat

DEAD = "http://127.0.0.1:1"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def settings(**changes: Any) -> WorkerSettings:
    base = WorkerSettings(server_ws_url="ws://127.0.0.1:9", private_key="", worker_id="wrk-test",
                          worker_name="test", models=None, max_concurrent=1,
                          ollama_endpoint="", refresh_interval_s=0.2, ollama_num_ctx_cap=0,
                          heartbeat_interval_s=1, heartbeat_timeout_s=3,
                          backends_disabled=("ollama",))
    return replace(base, **changes)


def registry_with(probes: dict[str, list[str]], **changes: Any) -> BackendRegistry:
    return BackendRegistry(settings(**changes), probes={"lmstudio": [DEAD], "vllm": [DEAD],
                                                        **probes})


@contextmanager
def lookalike() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 with vLLM's routes but another server's model list."""
    answers = {"/version": {"version": "0.4.0"},
               "/v1/models": {"object": "list", "data": [
                   {"id": "m", "object": "model", "owned_by": "sglang", "max_model_len": 10}]}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps(answers.get(self.path, {"detail": "Not Found"})).encode()
            self.send_response(200 if self.path in answers else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def status(registry: BackendRegistry, kind: str) -> Any:
    return next(s for s in registry.statuses() if s.kind == kind)


@pytest.fixture
async def vllm() -> AsyncIterator[EmulatorProcess]:
    async with run_openai_compat("vllm") as emu:
        yield emu


@pytest.fixture
async def lmstudio() -> AsyncIterator[EmulatorProcess]:
    async with run_openai_compat("lmstudio") as emu:
        yield emu


@pytest.fixture
async def llamacpp() -> AsyncIterator[EmulatorProcess]:
    async with run_openai_compat("llamacpp") as emu:
        yield emu


async def test_vllm_is_found_on_its_second_probe_with_context_from_max_model_len(
        vllm: EmulatorProcess) -> None:
    registry = registry_with({"vllm": [DEAD, vllm.base_url]})
    try:
        assert await registry.refresh()
        found = status(registry, "vllm")
        assert found.verified and found.endpoint == vllm.base_url and found.version == "0.11.0"
        assert found.tried == (DEAD, vllm.base_url)
        assert found.capabilities == ("chat", "embed")  # no install, no uninstall
        [model] = registry.models()
        assert (model.id, model.backend, model.context_length, model.capabilities,
                model.parameter_size) == (LLAMA, "vllm", 8192, ("completion",), "8B")
    finally:
        await registry.aclose()


async def test_impostors_on_the_vllm_port_are_rejected_with_a_reason(
        lmstudio: EmulatorProcess, llamacpp: EmulatorProcess) -> None:
    """Another OpenAI-compatible server on vLLM's port is not taken for vLLM, nor the reverse."""
    registry = registry_with({"vllm": [llamacpp.base_url, lmstudio.base_url]})
    try:
        await registry.refresh()
        rejected = status(registry, "vllm")
        assert not rejected.verified and registry.models() == []
        assert rejected.reason.count("GET /version answered 404") == 2  # neither has /version
        assert rejected.reason.count(";") == 1  # one reason per endpoint tried
    finally:
        await registry.aclose()
    backend = VLLMBackend()
    try:
        # A server that answers /version but whose models are not vLLM's is not vLLM either.
        with lookalike() as url:
            answer = await backend.verify(url)
        assert not answer.verified
        assert answer.reason == "GET /v1/models entries are owned by 'sglang', not 'vllm'"
    finally:
        await backend.aclose()


async def test_a_shared_port_goes_to_the_kind_that_verifies_it(
        vllm: EmulatorProcess, lmstudio: EmulatorProcess) -> None:
    """Two kinds probing the same ports each take the one that speaks their API."""
    both = [lmstudio.base_url, vllm.base_url]
    registry = registry_with({"vllm": both, "lmstudio": list(reversed(both))})
    try:
        await registry.refresh()
        assert status(registry, "vllm").endpoint == vllm.base_url
        assert status(registry, "lmstudio").endpoint == lmstudio.base_url
        assert "owned by" in status(registry, "vllm").reason or status(registry, "vllm").verified
        assert {(m.id, m.backend) for m in registry.models()} == {
            (LLAMA, "vllm"), ("qwen/qwen3-8b", "lmstudio"),
            ("text-embedding-nomic-embed-text-v1.5", "lmstudio")}
    finally:
        await registry.aclose()


async def test_vllm_chat_stream_and_embeddings_pass_the_body_through(
        tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"id": LLAMA, "task": "chat", "context": 8192},
                                  {"id": "BAAI/bge-m3", "task": "embed", "context": 8192}]))
    async with run_openai_compat("vllm", models=str(models)) as emu:
        registry = registry_with({"vllm": [emu.base_url]})
        try:
            await registry.refresh()
            backend, model = registry.backend_for(LLAMA)
            tools = [{"type": "function", "function": {
                "name": "weather", "parameters": {"type": "object", "properties": {
                    "city": {"type": "string"}}, "required": ["city"]}}}]
            body = {"model": LLAMA, "messages": [{"role": "user", "content": "hi"}],
                    "stream": True, "temperature": 0.2, "tools": tools}
            result = await backend.chat(model, body)
            chunks = [c async for c in result.chunks]
            assert result.finish_reason == "tool_calls" and result.usage.completion_tokens >= 1
            assert all("usage" not in c and c["choices"] for c in chunks)  # not asked for
            calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
            assert calls[0]["function"]["name"] == "weather"
            [sent] = await emu.requests("/v1/chat/completions")
            # Unchanged except the model name and the usage Pendra records: no num_ctx, no options.
            assert sent["body"] == {**body, "stream_options": {"include_usage": True}}

            asked = await backend.chat(model, {**body, "tools": None, "stream_options": {
                "include_usage": True}, "response_format": {"type": "json_object"}})
            chunks = [c async for c in asked.chunks]
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 1
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
            assert isinstance(json.loads(text), dict)

            whole = await backend.chat(model, {"model": LLAMA, "messages": [
                {"role": "user", "content": "hi [[tokens=3]]"}]})
            [answer] = [c async for c in whole.chunks]
            assert answer["object"] == "chat.completion" and whole.usage.completion_tokens == 3

            embedder, info = registry.backend_for("BAAI/bge-m3")
            assert info.capabilities == ("embedding",)
            data, usage = await embedder.embed(info, {"model": "BAAI/bge-m3",
                                                      "input": ["a b", "c"]})
            assert len(data["data"]) == 2 and usage.prompt_tokens == 3

            with pytest.raises(BackendRejected) as wrong:
                await embedder.embed(model, {"model": LLAMA, "input": "x"})
            assert wrong.value.status == 400 and "does not support" in wrong.value.message
            with pytest.raises(ModelNotFound):
                await backend.embed(replace(info, id="nope"), {"model": "nope", "input": "x"})
            broken = await backend.chat(model, {**body, "tools": None, "messages": [
                {"role": "user", "content": "[[tokens=5]] [[error-after=2]]"}]})
            with pytest.raises(BackendRejected, match="engine died"):
                _ = [c async for c in broken.chunks]
            with pytest.raises(UnsupportedOperation, match="restart"):
                await backend.install("other/model", lambda p: None)
        finally:
            await registry.aclose()


async def test_a_backend_that_disappears_is_withdrawn_and_returns(vllm: EmulatorProcess) -> None:
    registry = registry_with({"vllm": [vllm.base_url]})
    down: list[str] = []
    registry.subscribe(lambda kind, reason: down.append(kind))
    try:
        await registry.refresh()
        assert [m.id for m in registry.models()] == [LLAMA]
        await vllm.kill()
        assert await registry.refresh()
        assert registry.models() == [] and down == ["vllm"]
        with pytest.raises(BackendUnavailable):
            registry.backend_for(LLAMA)  # remembered: "unavailable", not "not served"
        await vllm.start()  # the same port
        assert await registry.refresh()
        assert [m.id for m in registry.models()] == [LLAMA]
    finally:
        await registry.aclose()


async def test_one_id_on_two_backends_is_offered_once_per_backend(
        tmp_path: Path, lmstudio: EmulatorProcess) -> None:
    """LM Studio (earlier in the order) keeps the plain id; vLLM's copy is ``<id>@vllm``, and a
    request for it reaches vLLM under vLLM's own name."""
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"id": "qwen/qwen3-8b", "task": "chat", "context": 40960}]))
    async with run_openai_compat("vllm", models=str(models)) as vllm:
        registry = registry_with({"vllm": [vllm.base_url], "lmstudio": [lmstudio.base_url]})
        try:
            await registry.refresh()
            offered = {m.id: m.backend for m in registry.models()}
            assert offered["qwen/qwen3-8b"] == "lmstudio"
            assert offered["qwen/qwen3-8b@vllm"] == "vllm"
            backend, native = registry.backend_for("qwen/qwen3-8b@vllm")
            assert backend.kind == "vllm" and native.id == "qwen/qwen3-8b"
            result = await backend.chat(native, {"model": "qwen/qwen3-8b@vllm", "messages": [
                {"role": "user", "content": "hi"}]})
            [answer] = [c async for c in result.chunks]
            assert answer["model"] == "qwen/qwen3-8b@vllm"  # the name the client asked for
            [sent] = await vllm.requests("/v1/chat/completions")
            assert sent["body"]["model"] == "qwen/qwen3-8b"
            assert await lmstudio.requests("/v1/chat/completions") == []
            assert registry.native_name("vllm", "qwen/qwen3-8b@vllm") == "qwen/qwen3-8b"
        finally:
            await registry.aclose()


async def test_backends_disabled_are_listed_but_never_probed(vllm: EmulatorProcess) -> None:
    registry = registry_with({"vllm": [vllm.base_url]}, backends_disabled=("ollama", "vllm"))
    try:
        await registry.refresh()
        off = status(registry, "vllm")
        assert not off.verified and off.reason == "disabled by BACKENDS_DISABLED"
        assert registry.models() == [] and await vllm.requests() == []
        with pytest.raises(Exception, match="disabled"):
            registry.backend_of_kind("vllm")
    finally:
        await registry.aclose()


async def test_lmstudio_reads_type_state_and_context_from_its_rest_api(
        lmstudio: EmulatorProcess) -> None:
    registry = registry_with({"lmstudio": [lmstudio.base_url]})
    try:
        await registry.refresh()
        found = status(registry, "lmstudio")
        assert found.verified and found.version == "rest v1"
        assert found.capabilities == ("chat", "embed", "install")  # removal only in the app
        models = {m.id: m for m in registry.models()}
        chat = models["qwen/qwen3-8b"]
        assert chat.context_length == 4096  # loaded: its instance's context, not the 32768 max
        assert chat.capabilities == ("completion", "tools")
        assert (chat.parameter_size, chat.quantization_level, chat.family) == ("8B", "Q4_K_M",
                                                                              "qwen3")
        embed = models["text-embedding-nomic-embed-text-v1.5"]
        assert embed.capabilities == ("embedding",) and embed.context_length == 2048
        backend, info = registry.backend_for("text-embedding-nomic-embed-text-v1.5")
        data, usage = await backend.embed(info, {"model": info.id, "input": "hello world"})
        assert data["data"][0]["object"] == "embedding" and usage.prompt_tokens == 2
        with pytest.raises(UnsupportedOperation, match="LM Studio app"):
            await backend.uninstall("qwen/qwen3-8b")
    finally:
        await registry.aclose()


async def test_lmstudio_installs_with_live_progress_and_reports_failure(
        lmstudio: EmulatorProcess) -> None:
    backend = LMStudioBackend()
    try:
        assert (await backend.verify(lmstudio.base_url)).verified
        await lmstudio.configure(download_bytes_per_s=4_000_000)
        seen: list[InstallProgress] = []
        await backend.install("ibm/granite-4-micro", seen.append)
        assert seen[-1] == InstallProgress("success", 2_000_000, 2_000_000)
        assert len(seen) >= 2 and seen[0].status == "downloading"
        assert all(a.completed <= b.completed for a, b in zip(seen, seen[1:]))
        assert all(p.completed <= p.total for p in seen)
        await backend.verify(lmstudio.base_url)
        assert "ibm/granite-4-micro" in [m.id for m in await backend.list_models()]
        again: list[InstallProgress] = []
        await backend.install("ibm/granite-4-micro", again.append)  # already downloaded
        assert [p.status for p in again] == ["success"]

        with pytest.raises(InstallFailed, match="not found"):
            await backend.install("nobody/nothing", lambda p: None)
        await lmstudio.configure(fail_downloads=True)
        with pytest.raises(InstallFailed, match="failed to download"):
            await backend.install("qwen/qwen3-4b", lambda p: None)
    finally:
        await backend.aclose()


async def test_lmstudio_before_rest_v1_serves_but_cannot_install() -> None:
    async with run_openai_compat("lmstudio", extra_args=["--no-rest-v1"]) as old:
        backend = LMStudioBackend()
        try:
            found = await backend.verify(old.base_url)
            assert found.verified and found.version == "rest v0"
            assert found.capabilities == ("chat", "embed")
            models = {m.id: m for m in await backend.list_models()}
            assert models["qwen/qwen3-8b"].context_length == 32768
            with pytest.raises(UnsupportedOperation, match="0.4 or newer"):
                await backend.install("ibm/granite-4-micro", lambda p: None)
        finally:
            await backend.aclose()


async def test_generic_endpoints_are_used_only_when_listed(llamacpp: EmulatorProcess) -> None:
    registry = BackendRegistry(settings(
        backends_disabled=("ollama", "lmstudio", "vllm"),
        openai_endpoints=({"name": "openai", "url": llamacpp.base_url, "api_key": "sekrit"},
                          {"name": "gone", "url": DEAD, "api_key": ""})))
    try:
        await registry.refresh()
        generic = status(registry, "openai")
        assert generic.verified and generic.version == "llamacpp" and generic.tried == (
            llamacpp.base_url,)
        assert not status(registry, "gone").verified
        [model] = registry.models()
        assert (model.id, model.backend, model.context_length) == (
            "qwen2.5-7b-instruct-q4_k_m.gguf", "openai", 32768)
        backend, info = registry.backend_for(model.id)
        result = await backend.chat(info, {"model": model.id, "stream": True, "messages": [
            {"role": "user", "content": "hi [[tokens=4]]"}]})
        text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in
                        result.chunks])
        assert text == "Hello word1 word2 word3." and result.usage.completion_tokens == 4
    finally:
        await registry.aclose()


def test_free_port_helper_is_local() -> None:
    assert 0 < free_port() < 65536


async def test_vllm_lights_up_on_the_first_tick_after_it_answers() -> None:
    """A worker started before vLLM serves vLLM's model after the next refresh tick: no restart."""
    import asyncio

    from polling import eventually

    port = free_port()
    registry = registry_with({"vllm": [f"http://127.0.0.1:{port}"]})
    changes: list[list[str]] = []

    async def on_change() -> None:
        changes.append([m.id for m in registry.models()])

    stop = asyncio.Event()
    await registry.refresh()
    assert registry.models() == []
    loop = asyncio.create_task(registry.run(stop, on_change))
    try:
        async with run_openai_compat("vllm", port=port):
            await eventually(lambda: changes and changes[-1] == [LLAMA], what="vLLM's model")
        assert status(registry, "vllm").verified or changes[-1] == [LLAMA]
    finally:
        stop.set()
        await loop
        await registry.aclose()


async def test_vllm_api_key_is_sent_and_a_wrong_one_is_the_workers_fault() -> None:
    async with run_openai_compat("vllm", extra_args=["--api-key", "sekrit"]) as emu:
        wrong = VLLMBackend(api_key="nope")
        right = VLLMBackend(api_key="sekrit")
        try:
            refused = await wrong.verify(emu.base_url)
            assert not refused.verified and "credentials" in refused.reason
            assert (await right.verify(emu.base_url)).verified
            [model] = await right.list_models()
            result = await right.chat(model, {"model": LLAMA, "messages": [
                {"role": "user", "content": "hi"}]})
            assert [c async for c in result.chunks]
        finally:
            await wrong.aclose()
            await right.aclose()


async def test_a_stalled_stream_fails_as_a_timeout_not_a_hang(vllm: EmulatorProcess) -> None:
    from pendra.backends.openai_compat.client import StreamLimits
    from pendra.errors import BackendTimeout

    backend = VLLMBackend(limits=StreamLimits(first_line_s=5, stall_s=0.3))
    try:
        assert (await backend.verify(vllm.base_url)).verified
        [model] = await backend.list_models()
        result = await backend.chat(model, {"model": LLAMA, "stream": True, "messages": [
            {"role": "user", "content": "[[tokens=3]] [[delay=2]]"}]})
        with pytest.raises(BackendTimeout, match="STREAM_STALL_TIMEOUT"):
            _ = [c async for c in result.chunks]
    finally:
        await backend.aclose()


async def test_cancelling_an_lmstudio_install_stops_following_it(
        lmstudio: EmulatorProcess) -> None:
    import asyncio

    from polling import eventually

    await lmstudio.configure(download_bytes_per_s=100_000)  # 20 s for 2 MB
    backend = LMStudioBackend()
    try:
        assert (await backend.verify(lmstudio.base_url)).verified
        seen: list[InstallProgress] = []
        task = asyncio.create_task(backend.install("ibm/granite-4-micro", seen.append))
        await eventually(lambda: len(seen) >= 2, what="two progress reads")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        polls = len(await lmstudio.requests())
        await asyncio.sleep(0.6)  # a follower still running would have polled twice by now
        assert len(await lmstudio.requests()) == polls
        assert all(p.status == "downloading" for p in seen)
    finally:
        await backend.aclose()

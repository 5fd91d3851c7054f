"""The Ollama backend's real code against the emulator running as a real process."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from suite_env import ONLY_OLLAMA
from pendra.backends.base import InstallProgress
from pendra.backends.ollama.backend import OllamaBackend
from pendra.backends.registry import BackendRegistry
from pendra.config import WorkerSettings
from pendra.errors import (BackendRejected, BackendTimeout, InstallFailed, ModelNotFound,
                           UnsupportedOperation)
from pendra.testing.servers import free_port, run_emulator
from polling import eventually
from suite_env import WAIT


def settings(endpoint: str = "", **changes: object) -> WorkerSettings:
    base = WorkerSettings(server_ws_url="ws://127.0.0.1:9", private_key="", worker_id="wrk-test",
                          worker_name="test", models=None, max_concurrent=1,
                          ollama_endpoint=endpoint, refresh_interval_s=0.2, ollama_num_ctx_cap=0,
                          heartbeat_interval_s=1, heartbeat_timeout_s=3,
                          backends_disabled=ONLY_OLLAMA)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def impostor() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that answers JSON, but not Ollama's."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"status": "ok", "service": "something else"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_probes_in_order_and_falls_back() -> None:
    """With no explicit endpoint the probe list is tried in order; the first dead one is skipped."""
    dead = f"http://127.0.0.1:{free_port()}"
    async with run_emulator(version="0.30.1") as emu:
        registry = BackendRegistry(settings(), probe_urls=[dead, emu.base_url])
        try:
            assert await registry.refresh() is True
            [status] = [s for s in registry.statuses() if s.kind == "ollama"]
            assert status.verified and status.endpoint == emu.base_url and status.version == "0.30.1"
            assert status.tried == (dead, emu.base_url)
        finally:
            await registry.aclose()


async def test_explicit_endpoint_wins_over_probes() -> None:
    """OLLAMA_ENDPOINT is used alone; the probe list is not consulted."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url), probe_urls=["http://127.0.0.1:1"])
        try:
            await registry.refresh()
            assert registry.statuses()[0].tried == (emu.base_url,)
            assert registry.statuses()[0].verified
        finally:
            await registry.aclose()


async def test_impostor_is_rejected_and_logged_once(impostor: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A server answering other JSON is not Ollama; the reason is logged once over many ticks."""
    registry = BackendRegistry(settings(impostor))
    try:
        with caplog.at_level(logging.INFO, logger="pendra.backends.registry"):
            for _ in range(4):
                await registry.refresh()
        [status] = [s for s in registry.statuses() if s.kind == "ollama"]
        assert not status.verified and "/api/version" in status.reason
        assert registry.models() == []
        assert caplog.text.count("ollama not available at") == 1
    finally:
        await registry.aclose()


async def test_ollama_leaving_and_coming_back() -> None:
    """When Ollama stops answering its models are withdrawn; on its return they are found again."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url))
        try:
            await registry.refresh()
            assert registry.models()
            await emu.stop()
            assert await registry.refresh() is True
            assert registry.models() == [] and not registry.statuses()[0].verified
            await emu.start()
            assert await registry.refresh() is True
            assert "llama3.2:latest" in {m.id for m in registry.models()}
        finally:
            await registry.aclose()


async def test_show_concurrency_is_bounded_at_five() -> None:
    """Discovery of 40 slow models keeps at most 5 /api/show in flight, and does use all 5."""
    async with run_emulator(models="none", show_delay_s=0.1) as emu:
        await emu.generate_models(40)
        registry = BackendRegistry(settings(emu.base_url))
        try:
            await registry.refresh()
            assert len(registry.models()) == 40
            assert (await emu.stats())["show_max_in_flight"] == 5
        finally:
            await registry.aclose()


async def test_metadata_reused_for_unchanged_digests_and_failing_show() -> None:
    """A second tick asks /api/show only for what changed; a failing show hides no other model."""
    async with run_emulator() as emu:
        await emu.configure(fail_show_for=["llava:7b"])
        registry = BackendRegistry(settings(emu.base_url))
        try:
            await registry.refresh()
            models = {m.id: m for m in registry.models()}
            assert models["llama3.2:latest"].context_length == 131072
            assert models["llava:7b"].parameter_size == "7B"  # from /api/tags
            assert models["nomic-embed-text:latest"].capabilities == ("embedding",)
            await emu.clear_requests()
            await registry.refresh()
            shows = [r["body"]["model"] for r in await emu.requests("/api/show")]
            assert shows == ["llava:7b"]  # only the one whose show failed is asked again
        finally:
            await registry.aclose()


async def test_models_filter_applies() -> None:
    """MODELS restricts what the worker offers (ids with or without :latest)."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url, models=("llama3.2", "qwen3:8b")))
        try:
            await registry.refresh()
            assert {m.id for m in registry.models()} == {"llama3.2:latest", "qwen3:8b"}
            with pytest.raises(ModelNotFound):
                registry.backend_for("llava:7b")
        finally:
            await registry.aclose()


async def test_models_filter_uses_ollamas_name_rule_and_serves_exact_ids_only() -> None:
    """MODELS names match by Ollama's rule (case, ``:latest``, ``library/``); a request must then
    name the exact id offered: the control plane resolved it, the worker does not guess."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url, models=(
            "Llama3.2", "library/QWEN3:8b", "X/Z-Image-Turbo")))
        try:
            await registry.refresh()
            assert {m.id for m in registry.models()} == {"llama3.2:latest", "qwen3:8b",
                                                         "x/z-image-turbo:latest"}
            assert registry.backend_for("llama3.2:latest")[1].id == "llama3.2:latest"
            for near in ("llama3.2", "Llama3.2:latest", "library/qwen3:8b", "x/z-image-turbo"):
                with pytest.raises(ModelNotFound):
                    registry.backend_for(near)
        finally:
            await registry.aclose()


async def _chat_options(emu_base: str, cap: int, body: dict[str, object]) -> dict[str, object]:
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url, ollama_num_ctx_cap=cap))
        try:
            await registry.refresh()
            backend, model = registry.backend_for("llama3.2:latest")
            result = await backend.chat(model, body)
            async for _ in result.chunks:
                pass
            [request] = await emu.requests("/api/chat")
            options: dict[str, object] = request["body"]["options"]
            return options
        finally:
            await registry.aclose()


async def test_num_ctx_injected_capped_and_client_wins() -> None:
    """num_ctx comes from discovery, is bounded by the cap, and the client's own value wins."""
    messages = [{"role": "user", "content": "hi"}]
    assert (await _chat_options("", 0, {"messages": messages}))["num_ctx"] == 131072
    assert (await _chat_options("", 16384, {"messages": messages}))["num_ctx"] == 16384
    mine = await _chat_options("", 16384, {"messages": messages, "max_tokens": 5,
                                           "options": {"num_ctx": 8192, "top_k": 3}})
    assert mine == {"num_ctx": 8192, "top_k": 3, "num_predict": 5}


async def test_images_depend_on_the_ollama_version() -> None:
    """Ollama 0.14.3–0.32.5 generates a PNG, and lists its image models as such; on newer
    versions an image model is not advertised as one (no ``image`` capability, so not
    ``type=image``, nor is the backend) and a request that still arrives gets a clear
    unsupported error."""
    body = {"model": "x/z-image-turbo:latest", "prompt": "a red square", "size": "16x16"}
    async with run_emulator(version="0.20.0") as emu:
        registry = BackendRegistry(settings(emu.base_url))
        try:
            await registry.refresh()
            backend, model = registry.backend_for("x/z-image-turbo:latest")
            assert "image" in model.types and "image" in model.capabilities
            data, _ = await backend.generate_image(model, body)
            assert data["data"][0]["b64_json"].startswith("iVBORw0KGgo")
            [sent] = await emu.requests("/api/generate")
            assert "options" not in sent["body"] or "num_ctx" not in sent["body"]["options"]
        finally:
            await registry.aclose()
    async with run_emulator(version="0.32.15") as emu:
        registry = BackendRegistry(settings(emu.base_url))
        try:
            await registry.refresh()
            backend, model = registry.backend_for("x/z-image-turbo:latest")
            assert "image" not in model.types and "image" not in model.capabilities
            [status] = [s for s in registry.statuses() if s.kind == "ollama"]
            assert "image" not in status.capabilities and "chat" in status.capabilities
            with pytest.raises(UnsupportedOperation, match=r"0\.32\.15"):
                await backend.generate_image(model, body)
            assert await emu.requests("/api/generate") == []
        finally:
            await registry.aclose()


async def test_pull_progress_is_aggregated_and_monotonic() -> None:
    """Multi-layer pull progress becomes one figure that never goes backwards, ending in success."""
    async with run_emulator() as emu:
        await emu.configure(pull_bytes_per_s=1_000_000_000)
        backend = OllamaBackend()
        try:
            assert (await backend.verify(emu.base_url)).verified
            seen: list[InstallProgress] = []
            await backend.install("gemma3:1b", seen.append)
            completed = [p.completed for p in seen]
            assert completed == sorted(completed)
            assert seen[-1].status == "success" and seen[-1].completed == seen[-1].total >= 815_319_791
            assert "verifying sha256 digest" in {p.status for p in seen}
            with pytest.raises(InstallFailed, match="pull model manifest: file does not exist"):
                await backend.install("no-such-model:1b", seen.append)
            await backend.uninstall("gemma3:1b")
            with pytest.raises(ModelNotFound, match="not installed"):
                await backend.uninstall("gemma3:1b")
        finally:
            await backend.aclose()


async def test_cancelling_a_pull_aborts_it_at_ollama() -> None:
    """Cancelling the install task closes the pull stream; Ollama sees the pull cancelled."""
    async with run_emulator() as emu:
        await emu.configure(pull_bytes_per_s=10_000_000)
        backend = OllamaBackend()
        try:
            await backend.verify(emu.base_url)
            started = asyncio.Event()
            task = asyncio.create_task(backend.install("gemma3:1b", lambda p: started.set()))
            await asyncio.wait_for(started.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async def pull_cancelled() -> bool:
                return (await emu.stats())["pulls_cancelled"] > 0

            await eventually(pull_cancelled, timeout_s=5, interval_s=0.05)
        finally:
            await backend.aclose()


async def test_chat_translation_streaming_tools_thinking_and_errors() -> None:
    """Streamed chat yields OpenAI chunks (reasoning, tool calls, finish, usage); errors raise."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url))
        try:
            await registry.refresh()
            backend, qwen = registry.backend_for("qwen3:8b")
            result = await backend.chat(qwen, {"model": "qwen3:8b", "stream": True,
                                               "stream_options": {"include_usage": True},
                                               "messages": [{"role": "user", "content": "hi"}]})
            chunks = [c async for c in result.chunks]
            assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            assert any(c["choices"] and c["choices"][0]["delta"].get("reasoning") for c in chunks)
            assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
            tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
                "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
            result = await backend.chat(qwen, {"model": "qwen3:8b", "tools": tools, "think": False,
                                               "messages": [{"role": "user", "content": "find"}]})
            [completion] = [c async for c in result.chunks]
            call = completion["choices"][0]["message"]["tool_calls"][0]
            assert json.loads(call["function"]["arguments"]) == {"q": "test"}
            assert completion["choices"][0]["finish_reason"] == "tool_calls"
            backend, llama = registry.backend_for("llama3.2:latest")
            result = await backend.chat(llama, {"stream": True, "messages": [
                {"role": "user", "content": "[[tokens=10]] [[error-after=3]]"}]})
            got = []
            with pytest.raises(BackendRejected, match="model runner has unexpectedly stopped"):
                async for chunk in result.chunks:
                    got.append(chunk)
            assert len(got) == 3
            with pytest.raises(BackendRejected, match="does not support thinking"):
                result = await backend.chat(llama, {"reasoning_effort": "high", "messages": [
                    {"role": "user", "content": "x"}]})
                async for _ in result.chunks:
                    pass
        finally:
            await registry.aclose()


async def test_embeddings_forwarded_without_injection() -> None:
    """Embeddings keep input order and carry no num_ctx."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url))
        try:
            await registry.refresh()
            backend, model = registry.backend_for("nomic-embed-text:latest")
            data, usage = await backend.embed(model, {"input": ["a b", "c"]})
            assert [d["index"] for d in data["data"]] == [0, 1] and usage.prompt_tokens > 0
            [sent] = await emu.requests("/api/embed")
            assert "options" not in sent["body"]
            with pytest.raises(BackendRejected, match="does not take audio"):
                await backend.transcribe(model, {})  # 0.32.15 transcribes, but not with this
        finally:
            await registry.aclose()


# --- stream limits: loading is not stalling ---------------------------------------------------------


async def _stream_text(first_token_s: float, stall_s: float, text: str, *,
                       aborts_stream: bool = False) -> list[dict[str, object]]:
    """Stream one chat through a registry with these limits; the chunks (or the error raised).
    With ``aborts_stream``, the error must also have closed the stream at "Ollama"."""
    async with run_emulator() as emu:
        registry = BackendRegistry(settings(emu.base_url, first_token_timeout_s=first_token_s,
                                            stream_stall_timeout_s=stall_s))
        try:
            await registry.refresh()
            backend, llama = registry.backend_for("llama3.2:latest")
            result = await backend.chat(llama, {"stream": True, "messages": [
                {"role": "user", "content": text}]})
            got: list[dict[str, object]] = []
            try:
                async with asyncio.timeout(10 * WAIT):  # a hang fails the test, not the suite
                    async for chunk in result.chunks:
                        got.append(chunk)
            except BackendTimeout:
                if not aborts_stream:
                    raise
                async def hung_up() -> bool:  # the worker hung up on "Ollama"
                    return bool((await emu.stats())["cancelled"])

                await eventually(hung_up, timeout_s=5, interval_s=0.02)
                raise
            return got
        finally:
            await registry.aclose()


async def test_a_stream_silent_past_the_stall_limit_fails_with_a_clear_error() -> None:
    """A stream that goes silent after its first tokens (a hung runner; the server still answers)
    raises BackendTimeout naming the stall and its setting, and the request is aborted at Ollama."""
    with pytest.raises(BackendTimeout, match="stalled.*0.5s.*STREAM_STALL_TIMEOUT") as caught:
        await _stream_text(30, 0.5, "story [[tokens=20]] [[stall-after=3]]", aborts_stream=True)
    assert caught.value.status == 504


async def test_a_slow_first_token_is_loading_not_stalling() -> None:
    """Before the first token Ollama may be loading the model and says nothing: a wait longer than
    the stall limit but within the first-token limit is not a stall."""
    chunks = await _stream_text(30, 0.3, "hello [[tokens=4]] [[load=1.2]]")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]


async def test_no_first_token_within_its_limit_fails() -> None:
    """The first-token limit bounds loading too: past it the request fails, saying so."""
    with pytest.raises(BackendTimeout, match="no first token.*0.5s.*FIRST_TOKEN_TIMEOUT"):
        await _stream_text(0.5, 30, "hello [[load=20]]")


async def test_logprobs_need_an_ollama_that_has_them() -> None:
    """On an Ollama older than 0.12.11 (which would answer without log probabilities) a chat or a
    completion asking for them is refused with a clear unsupported error, and nothing is sent;
    other requests are served."""
    async with run_emulator(version="0.12.10") as emu:
        registry = BackendRegistry(settings(emu.base_url))
        try:
            await registry.refresh()
            backend, model = registry.backend_for("llama3.2:latest")
            chat = {"model": "llama3.2:latest", "logprobs": True,
                    "messages": [{"role": "user", "content": "hi"}]}
            with pytest.raises(UnsupportedOperation, match=r"0\.12\.10.*0\.12\.11"):
                await backend.chat(model, chat)
            with pytest.raises(UnsupportedOperation, match=r"0\.12\.11"):
                await backend.complete(model, {"model": "llama3.2:latest", "prompt": "p",
                                               "logprobs": 1})
            assert await emu.requests("/api/chat") == await emu.requests("/api/generate") == []
            served = await backend.complete(model, {"model": "llama3.2:latest", "prompt": "p"})
            [whole] = [item async for item in served.chunks]
            assert whole["object"] == "text_completion" and whole["choices"][0]["text"]
        finally:
            await registry.aclose()


@pytest.mark.parametrize("version", ["0.19.3", "0.20.0"])
async def test_transcription_only_from_ollama_0_20(version: str) -> None:
    """Before 0.20.0 an audio model is no transcription model and Ollama is never asked (the
    route did not exist); from 0.20.0 its /v1/audio/transcriptions answers."""
    import io
    import wave
    from pendra.protocol.transcription import TranscriptionJob, job_body

    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\x00\x01" * 8000)
    job = TranscriptionJob(model="m", audio=out.getvalue(), filename="a.wav",
                           content_type="audio/wav", response_format="text")
    async with run_emulator(version=version) as emu:
        await emu.add_model({"name": "hear:latest", "capabilities": ["completion", "audio"]})
        registry = BackendRegistry(settings(emu.base_url))
        try:
            await registry.refresh()
            backend, model = registry.backend_for("hear:latest")
            if version == "0.19.3":
                assert model.types == ("chat",)
                with pytest.raises(UnsupportedOperation, match="from 0.20.0"):
                    await backend.transcribe(model, job_body(job))
                assert await emu.requests("/v1/audio/transcriptions") == []
            else:
                assert model.types == ("chat", "transcription")
                answer, usage = await backend.transcribe(model, job_body(job))
                assert answer["text"].startswith("Ollama heard 1.00 seconds")
                assert usage.total_tokens == 0
        finally:
            await registry.aclose()

"""The worker's Runner against the real registry, the real OllamaBackend and the Ollama emulator.

Frames the runner sends are collected in order by a ``send`` that appends to a list; the emulator
tells us what reached "Ollama" and what was cancelled there.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio

from suite_env import ONLY_OLLAMA
from pendra.backends.base import InstallProgress
from pendra.backends.registry import BackendRegistry
from pendra.config import WorkerSettings
from pendra.protocol.frames import (Cancel, CancelOp, Chunk, End, Error, Frame, Install, OpDone,
                                    OpFailed, OpOutcome, Progress, Request, Uninstall)
from pendra.testing.servers import EmulatorProcess, run_emulator
from pendra.worker.metrics import WorkerMetrics
from pendra.worker.runner import PROGRESS_INTERVAL_S, ProgressRelay, Runner
from polling import eventually
from suite_env import WAIT

CHAT_MODEL = "llama3.2:latest"


def worker_settings(endpoint: str, *, max_concurrent: int = 4, **limits: float) -> WorkerSettings:
    return WorkerSettings(
        server_ws_url="ws://127.0.0.1:9", private_key="", worker_id="wrk-test", worker_name="alpha",
        models=None, max_concurrent=max_concurrent, ollama_endpoint=endpoint,
        refresh_interval_s=60.0, ollama_num_ctx_cap=0, heartbeat_interval_s=5.0,
        heartbeat_timeout_s=15.0, backends_disabled=ONLY_OLLAMA, **limits)


@dataclass
class Harness:
    """A started Runner whose frames land in ``log`` (with "models_changed" markers between)."""

    runner: Runner
    registry: BackendRegistry
    log: list[Frame | str] = field(default_factory=list)

    def frames(self, kind: type[Frame] | tuple[type[Frame], ...] = Frame,
               key: str | None = None) -> list[Any]:
        return [f for f in self.log if isinstance(f, kind)
                and (key is None or getattr(f, "id", getattr(f, "op_id", None)) == key)]

    async def wait_for(self, kind: type[Frame] | tuple[type[Frame], ...], key: str,
                       timeout_s: float = 10.0) -> Any:
        found = await eventually(lambda: self.frames(kind, key), timeout_s=timeout_s,
                                 what=f"a {kind} frame for {key}")
        return found[0]


@asynccontextmanager
async def started(emulator: EmulatorProcess, *, max_concurrent: int = 4,
                  on_send: Callable[[Frame], None] | None = None,
                  metrics: WorkerMetrics | None = None,
                  **limits: float) -> AsyncIterator[Harness]:
    registry = BackendRegistry(worker_settings(emulator.base_url, max_concurrent=max_concurrent,
                                               **limits))
    await registry.refresh()
    log: list[Frame | str] = []

    async def send(frame: Frame) -> bool:
        if on_send is not None:
            on_send(frame)
        log.append(frame)
        return True

    async def models_changed() -> None:
        log.append("models_changed")

    try:
        runner = Runner(registry, send, max_concurrent=max_concurrent,
                        on_models_changed=models_changed, metrics=metrics)
        async with runner:
            yield Harness(runner, registry, log)
    finally:
        await registry.aclose()


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorProcess]:
    async with run_emulator() as running:
        yield running


def chat(request_id: str, text: str, *, stream: bool = True, model: str = CHAT_MODEL) -> Request:
    return Request(id=request_id, kind="chat", model=model, body={
        "model": model, "messages": [{"role": "user", "content": text}], "stream": stream,
        "stream_options": {"include_usage": True}})


async def cancelled_at_emulator(emulator: EmulatorProcess, path: str) -> list[dict[str, Any]]:
    """Wait (bounded) until the emulator has recorded a cancelled request on ``path``."""
    async def found() -> list[dict[str, Any]]:
        return [c for c in (await emulator.stats())["cancelled"] if c["path"] == path]

    return await eventually(found, timeout_s=5, interval_s=0.02)


def pull_cancelled(emulator: EmulatorProcess) -> Callable[[], Awaitable[bool]]:
    """A check for ``eventually``: the emulator has recorded a cancelled pull."""
    async def check() -> bool:
        return (await emulator.stats())["pulls_cancelled"] >= 1
    return check


# --- requests ------------------------------------------------------------------------------------------


async def test_streamed_chat_sends_chunks_then_end_with_usage(emulator: EmulatorProcess) -> None:
    """A streamed chat becomes one chunk frame per OpenAI chunk, then one end with usage."""
    async with started(emulator) as h:
        await h.runner.on_frame(chat("r1", "hello [[tokens=5]]"))
        end = await h.wait_for(End, "r1")
        frames = h.frames(key="r1")
    assert isinstance(frames[-1], End) and all(isinstance(f, Chunk) for f in frames[:-1])
    content = "".join(c.data["choices"][0]["delta"].get("content") or ""
                      for c in frames[:-1] if c.data["choices"])
    assert len(content.split()) == 5
    assert end.usage["completion_tokens"] == 5 and end.usage["prompt_tokens"] > 0
    assert end.usage["total_tokens"] == end.usage["prompt_tokens"] + 5
    assert end.finish_reason == "stop"


async def test_non_streamed_chat_is_one_chunk(emulator: EmulatorProcess) -> None:
    """Without stream the whole chat.completion travels in one chunk before the end."""
    async with started(emulator) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=3]]", stream=False))
        await h.wait_for(End, "r1")
    chunk, end = h.frames(key="r1")
    assert chunk.data["object"] == "chat.completion" and end.usage["completion_tokens"] == 3


async def test_embed_sends_one_chunk_then_end(emulator: EmulatorProcess) -> None:
    """An embeddings request answers with the whole OpenAI response in one chunk, then usage."""
    request = Request(id="e1", kind="embed", model="nomic-embed-text:latest",
                      body={"model": "nomic-embed-text:latest", "input": ["a", "b"]})
    async with started(emulator) as h:
        await h.runner.on_frame(request)
        await h.wait_for(End, "e1")
    chunk, end = h.frames(key="e1")
    assert chunk.data["object"] == "list" and len(chunk.data["data"]) == 2
    assert end.usage["prompt_tokens"] > 0


async def test_unknown_model_is_an_error_404_naming_model_and_worker(
        emulator: EmulatorProcess) -> None:
    """A model this worker does not serve is refused with 404 naming both."""
    async with started(emulator) as h:
        await h.runner.on_frame(chat("r1", "hi", model="nosuch:7b"))
        error = await h.wait_for(Error, "r1")
    assert error.status == 404 and error.kind == "model_not_found"
    assert "nosuch:7b" in error.message and "alpha" in error.message
    assert h.frames(key="r1") == [error]


async def test_error_mid_stream_follows_the_chunks_and_replaces_end(
        emulator: EmulatorProcess) -> None:
    """Ollama failing after some tokens gives chunks, then an error frame, and no end."""
    async with started(emulator) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=10]] [[error-after=3]]"))
        error = await h.wait_for(Error, "r1")
    frames = h.frames(key="r1")
    assert frames[-1] is error and len(frames) > 1
    assert all(isinstance(f, Chunk) for f in frames[:-1])
    assert "unexpectedly stopped" in error.message and error.status >= 500


async def test_cancel_mid_stream_aborts_ollama_and_sends_nothing_more(
        emulator: EmulatorProcess) -> None:
    """A cancel frame closes the stream to Ollama; no end or error follows."""
    async with started(emulator) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=200]] [[delay=0.05]]"))
        await h.wait_for(Chunk, "r1")
        await h.runner.on_frame(Cancel(id="r1"))
        await cancelled_at_emulator(emulator, "/api/chat")
        assert h.runner.in_flight == 0
    assert not h.frames((End, Error), "r1")


def complete(request_id: str, prompt: Any, **fields: Any) -> Request:
    return Request(id=request_id, kind="complete", model=CHAT_MODEL, body={
        "model": CHAT_MODEL, "prompt": prompt, **fields})


async def test_a_completion_streams_on_the_chat_path(emulator: EmulatorProcess) -> None:
    """A ``complete`` request is streamed as chat is: text_completion chunks as they come (each
    choice of a list prompt in turn), then one end with the summed usage; whole, one chunk."""
    async with started(emulator) as h:
        await h.runner.on_frame(complete("c1", ["a b [[tokens=3]]", "c [[tokens=2]]"],
                                         stream=True, max_tokens=50))
        end = await h.wait_for(End, "c1")
        await h.runner.on_frame(complete("c2", "x [[tokens=4]]", max_tokens=2))
        whole_end = await h.wait_for(End, "c2")
        streamed, whole = h.frames(Chunk, "c1"), h.frames(Chunk, "c2")
    assert {c.data["object"] for c in streamed} == {"text_completion"}
    finished = [c.data["choices"][0]["index"] for c in streamed
                if c.data["choices"][0]["finish_reason"]]
    assert finished == [0, 1] and end.usage["completion_tokens"] == 5
    [only] = whole
    assert only.data["choices"][0]["finish_reason"] == "length" == whole_end.finish_reason
    generated = await emulator.requests("/api/generate")
    assert [r["body"]["raw"] for r in generated] == [True, True, True]


async def test_cancel_mid_completion_aborts_the_generate_call(emulator: EmulatorProcess) -> None:
    """A cancel frame closes the /api/generate stream; no end or error follows."""
    async with started(emulator) as h:
        await h.runner.on_frame(complete("c1", "hi [[tokens=200]] [[delay=0.05]]", stream=True,
                                         max_tokens=500))
        await h.wait_for(Chunk, "c1")
        await h.runner.on_frame(Cancel(id="c1"))
        await cancelled_at_emulator(emulator, "/api/generate")
        assert not h.frames((End, Error), "c1")


async def test_cancel_before_the_request_starts_frees_its_slot(emulator: EmulatorProcess) -> None:
    """A request cancelled before its task ran sends nothing and does not hold its slot."""
    async with started(emulator, max_concurrent=1) as h:
        await h.runner.on_frame(chat("r1", "hi"))
        await h.runner.on_frame(Cancel(id="r1"))
        await eventually(lambda: not h.runner.in_flight, timeout_s=5)
        await h.runner.on_frame(chat("r2", "hi [[tokens=2]]"))
        await h.wait_for(End, "r2")
    assert h.frames(key="r1") == []


async def test_more_requests_than_capacity_are_refused_with_503(emulator: EmulatorProcess) -> None:
    """Past max_concurrent an extra request gets 503 at once; the running one is unaffected."""
    async with started(emulator, max_concurrent=1) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=6]] [[delay=0.05]]"))
        await h.runner.on_frame(chat("r2", "hi"))
        refused = await h.wait_for(Error, "r2")
        await h.wait_for(End, "r1")
    assert refused.status == 503 and "at capacity" in refused.message
    assert h.frames(key="r2") == [refused]


async def test_slot_is_free_when_the_end_frame_goes_out(emulator: EmulatorProcess) -> None:
    """The server may reuse a slot as soon as it reads `end`, so the slot is freed before it."""
    seen: list[int] = []
    async with started(emulator, max_concurrent=1,
                       on_send=lambda f: seen.append(h.runner.in_flight)
                       if isinstance(f, End) else None) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=2]]"))
        await h.wait_for(End, "r1")
    assert seen == [0]


async def test_on_disconnect_cancels_requests_and_operations(emulator: EmulatorProcess) -> None:
    """A dropped socket aborts every request and install at Ollama and sends nothing for them."""
    await emulator.configure(pull_bytes_per_s=20_000_000)
    async with started(emulator) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=200]] [[delay=0.05]]"))
        await h.runner.on_frame(Install(op_id="op1", model="gemma3:1b"))
        await h.wait_for(Chunk, "r1")
        await h.wait_for(Progress, "op1")
        await h.runner.on_disconnect()
        await cancelled_at_emulator(emulator, "/api/chat")
        await eventually(pull_cancelled(emulator), timeout_s=5, interval_s=0.02)
        assert h.runner.in_flight == 0
    assert not h.frames((End, Error), "r1")
    assert not h.frames((OpDone, OpFailed), "op1")


async def test_shutdown_refuses_new_work_and_drains_running_requests(
        emulator: EmulatorProcess) -> None:
    """After stop_accepting new requests get 503; drain lets a running request finish."""
    async with started(emulator) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=5]] [[delay=0.05]]"))
        h.runner.stop_accepting()
        await h.runner.on_frame(chat("r2", "hi"))
        await h.runner.on_frame(Install(op_id="op1", model="gemma3:1b"))
        await h.runner.drain(5 * WAIT)
        assert h.frames(End, "r1")
    refused = h.frames(Error, "r2")[0]
    assert refused.status == 503 and "shutting down" in refused.message
    assert h.frames(OpFailed, "op1")[0].status == 503


async def test_drain_cancels_requests_that_outlive_the_deadline(emulator: EmulatorProcess) -> None:
    """A request still running when the drain deadline passes is cancelled at Ollama."""
    async with started(emulator) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=200]] [[delay=0.05]]"))
        await h.wait_for(Chunk, "r1")
        h.runner.stop_accepting()
        await h.runner.drain(0.2)
        await cancelled_at_emulator(emulator, "/api/chat")
    assert not h.frames((End, Error), "r1")


# --- a backend that stops answering --------------------------------------------------------------


async def test_a_refused_backend_is_503_with_retry_after_and_marked_down(
        emulator: EmulatorProcess) -> None:
    """The first request after Ollama dies gets error 503 ``backend_unavailable`` with an honest
    ``retry_after_s`` (when it is next probed) and the backend is marked down on the spot, so the
    next request for its model gets the same answer without trying Ollama (not a 404)."""
    async with started(emulator) as h:
        await emulator.kill()
        await h.runner.on_frame(chat("r1", "hi"))
        first = await h.wait_for(Error, "r1")
        assert not h.registry.statuses()[0].verified
        await h.runner.on_frame(chat("r2", "hi"))
        second = await h.wait_for(Error, "r2")
    for error in (first, second):
        assert error.status == 503 and error.kind == "backend_unavailable", error
        assert error.retry_after_s is not None and 1 <= error.retry_after_s <= 2, error
        assert "not answering" in error.message
    assert emulator.base_url in first.message and "alpha" in second.message


async def test_a_backend_marked_down_fails_its_requests_in_flight_at_once(
        emulator: EmulatorProcess) -> None:
    """When a tick's verification finds Ollama hung (SIGSTOP, sockets open), a stream in flight on
    it is answered error 503 at once, with retry_after_s, instead of hanging on the silent socket;
    nothing else follows for it."""
    async with started(emulator) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=400]] [[delay=0.05]]"))
        await h.wait_for(Chunk, "r1")
        assert emulator.process is not None
        emulator.process.send_signal(signal.SIGSTOP)
        try:
            assert await h.registry.refresh() is True  # the tick: /api/version times out
            error = await h.wait_for(Error, "r1", timeout_s=2)
            assert h.runner.in_flight == 0
        finally:
            emulator.process.send_signal(signal.SIGCONT)
    assert error.status == 503 and error.kind == "backend_unavailable"
    assert error.retry_after_s is not None and error.retry_after_s >= 1
    assert "stopped answering" in error.message and "alpha" in error.message
    frames = h.frames(key="r1")
    assert frames[-1] is error and not h.frames(End, "r1")


async def test_metrics_count_each_answered_request_once(emulator: EmulatorProcess) -> None:
    """With metrics on, every request the runner answers counts once by backend, kind and status
    — a chat, an embedding, an unknown model (no backend), a stream failed because its backend
    went down (503) — with the chats' first chunks timed; a request the control plane cancelled
    is not counted, and no timing is left behind."""
    metrics = WorkerMetrics(_Statuses())
    async with started(emulator, metrics=metrics) as h:
        await h.runner.on_frame(chat("ok", "hi", stream=False))
        await h.wait_for(End, "ok")
        await h.runner.on_frame(Request(id="emb", kind="embed", model="nomic-embed-text:latest",
                                        body={"model": "nomic-embed-text:latest", "input": "x"}))
        await h.wait_for(End, "emb")
        await h.runner.on_frame(chat("nope", "hi", model="not-here:latest"))
        await h.wait_for(Error, "nope")
        await h.runner.on_frame(chat("gone", "hi [[tokens=400]] [[delay=0.05]]"))
        await h.wait_for(Chunk, "gone")
        await h.runner.on_frame(Cancel(id="gone"))
        await eventually(lambda: h.runner.in_flight == 0)
        await h.runner.on_frame(chat("down", "hi [[tokens=400]] [[delay=0.05]]"))
        await h.wait_for(Chunk, "down")
        assert emulator.process is not None
        emulator.process.send_signal(signal.SIGSTOP)
        try:
            assert await h.registry.refresh() is True
            await h.wait_for(Error, "down", timeout_s=2)
        finally:
            emulator.process.send_signal(signal.SIGCONT)
        await eventually(lambda: not h.runner._timing)
    counts = {tuple(sorted(s.labels.items())): s.value for s in metrics.requests.collect()[0].samples
              if s.name.endswith("_total")}
    assert counts == {(("backend", "ollama"), ("kind", "chat"), ("status", "200")): 1,
                      (("backend", "ollama"), ("kind", "embed"), ("status", "200")): 1,
                      (("backend", ""), ("kind", "chat"), ("status", "404")): 1,
                      (("backend", "ollama"), ("kind", "chat"), ("status", "503")): 1}
    firsts = [s.value for s in metrics.first_chunk.collect()[0].samples
              if s.name.endswith("_count")]
    assert firsts == [3]  # ok, gone and down each had a first chunk


class _Statuses:
    def statuses(self) -> list[object]:
        return []


async def test_a_stalled_stream_is_failed_with_a_clear_error(emulator: EmulatorProcess) -> None:
    """A stream that goes silent mid-way for longer than the stall limit ends with error 504
    ``backend_timeout`` saying it stalled, and is aborted at Ollama; Ollama itself still answers,
    so the backend stays up and the next request is served."""
    async with started(emulator, stream_stall_timeout_s=0.5) as h:
        await h.runner.on_frame(chat("r1", "hi [[tokens=50]] [[stall-after=2]]"))
        error = await h.wait_for(Error, "r1")
        await cancelled_at_emulator(emulator, "/api/chat")
        await h.runner.on_frame(chat("r2", "hi [[tokens=2]]"))
        await h.wait_for(End, "r2")
        assert h.registry.statuses()[0].verified
    assert error.status == 504 and error.kind == "backend_timeout"
    assert "stalled" in error.message and "STREAM_STALL_TIMEOUT" in error.message
    assert len(h.frames(Chunk, "r1")) >= 2


# --- model operations --------------------------------------------------------------------------------


async def test_install_relays_throttled_monotonic_progress_then_done(
        emulator: EmulatorProcess) -> None:
    """An install forwards rising progress at most ~4/s, re-discovers, announces, then says done."""
    await emulator.configure(pull_bytes_per_s=400_000_000)
    async with started(emulator) as h:
        started_at = time.monotonic()
        await h.runner.on_frame(Install(op_id="op1", model="qwen2.5:0.5b"))
        await h.wait_for((OpDone, OpFailed), "op1", timeout_s=20)
        elapsed = time.monotonic() - started_at
        models = [m.id for m in h.registry.models()]
    progress = h.frames(Progress, "op1")
    completed = [p.completed for p in progress]
    assert completed == sorted(completed) and len(set(completed)) >= 3
    assert len(progress) <= elapsed / PROGRESS_INTERVAL_S + 2  # throttled, not one per pull line
    assert progress[-1].status == "success" and progress[-1].completed == progress[-1].total
    assert progress[-1].total >= 397_821_319
    assert h.log[-2:] == ["models_changed", OpDone(op_id="op1")]
    assert "qwen2.5:0.5b" in models


async def test_install_of_an_unknown_tag_fails_with_ollamas_message(
        emulator: EmulatorProcess) -> None:
    """A tag the registry does not have fails with Ollama's own words."""
    async with started(emulator) as h:
        await h.runner.on_frame(Install(op_id="op1", model="nosuch:1b"))
        failed = await h.wait_for((OpDone, OpFailed), "op1")
    assert isinstance(failed, OpFailed) and failed.outcome is OpOutcome.FAILED
    assert "pull model manifest: file does not exist" in failed.message


async def test_cancel_op_aborts_the_pull_and_reports_cancelled(emulator: EmulatorProcess) -> None:
    """cancel_op closes the pull at Ollama and answers failed with the typed outcome cancelled."""
    await emulator.configure(pull_bytes_per_s=20_000_000)
    async with started(emulator) as h:
        await h.runner.on_frame(Install(op_id="op1", model="gemma3:1b"))
        await h.wait_for(Progress, "op1")
        await h.runner.on_frame(CancelOp(op_id="op1"))
        await h.runner.on_frame(CancelOp(op_id="op1"))  # a repeat is answered once
        failed = await h.wait_for((OpDone, OpFailed), "op1")
        await eventually(pull_cancelled(emulator), timeout_s=5, interval_s=0.02)
    assert isinstance(failed, OpFailed) and failed.outcome is OpOutcome.CANCELLED
    assert failed.message == "cancelled"  # for people (and version-2 control planes)
    assert h.frames((OpDone, OpFailed), "op1") == [failed]
    assert "gemma3:1b" not in [m.id for m in h.registry.models()]


async def test_cancel_op_before_the_install_starts_still_reports_cancelled(
        emulator: EmulatorProcess) -> None:
    """Even an install cancelled before its task ran is answered, so the server never waits."""
    async with started(emulator) as h:
        await h.runner.on_frame(Install(op_id="op1", model="gemma3:1b"))
        await h.runner.on_frame(CancelOp(op_id="op1"))
        failed = await h.wait_for((OpDone, OpFailed), "op1")
    assert isinstance(failed, OpFailed) and failed.message == "cancelled"
    assert h.frames(key="op1") == [failed]


async def test_uninstall_removes_the_model_then_says_done(emulator: EmulatorProcess) -> None:
    """An uninstall deletes at Ollama, re-discovers and announces before done."""
    async with started(emulator) as h:
        await h.runner.on_frame(Uninstall(op_id="op1", model="qwen3:8b"))
        await h.wait_for((OpDone, OpFailed), "op1")
        models = [m.id for m in h.registry.models()]
    assert h.log[-2:] == ["models_changed", OpDone(op_id="op1")]
    assert "qwen3:8b" not in models and CHAT_MODEL in models


async def test_uninstall_of_a_missing_model_fails_with_404(emulator: EmulatorProcess) -> None:
    """Removing a model that is not installed fails 404 with a clear "not installed"."""
    async with started(emulator) as h:
        await h.runner.on_frame(Uninstall(op_id="op1", model="gemma3:1b"))
        failed = await h.wait_for((OpDone, OpFailed), "op1")
    assert isinstance(failed, OpFailed) and failed.status == 404
    assert "not installed" in failed.message and "gemma3:1b" in failed.message
    assert "models_changed" not in h.log


# --- the progress relay on its own ------------------------------------------------------------------


async def test_progress_relay_sends_only_the_latest_as_the_backend_reported_it() -> None:
    """Between sends only the latest figure counts, sent as the backend reported it (the backend
    owns "never backwards": PullProgress); an unchanged figure is not sent twice."""
    sent: list[Frame] = []

    async def send(frame: Frame) -> bool:
        sent.append(frame)
        return True

    relay = ProgressRelay("op1", send)
    await relay.flush()  # nothing yet
    for done in (10, 20, 30):
        relay.update(InstallProgress("pulling a", done, 100))
    await relay.flush()
    await relay.flush()  # unchanged: not sent twice
    relay.update(InstallProgress("pulling b", 5, 100))
    await relay.flush()
    assert sent == [Progress(op_id="op1", status="pulling a", completed=30, total=100),
                    Progress(op_id="op1", status="pulling b", completed=5, total=100)]

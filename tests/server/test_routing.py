"""The router on an in-memory hub (no sockets): name resolution, candidates, the bounded wait for
a slot, whose fault a failure is, and what ``open`` retries — each decision on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from hub_fakes import (CHAT, EMBED, FakeLink, Script, answer, attach, chunk, end, error, inventory,
                       model, new_hub)
from pendra.catalogue.loader import parse_catalogue
from pendra.errors import (InvalidRequest, ModelUnavailable, NoCapacity, NotFound, PendraError,
                           WorkerFailed)
from pendra.protocol.frames import Chunk, Error, Request
from pendra.server.hub import Hub, WorkerGone, WorkerView
from pendra.server.routing import (RETRY_AFTER_S, Fault, Router, WorkerRejected, classify,
                                   error_from_frame)
from polling import eventually
from suite_env import WAIT

CATALOGUE = parse_catalogue("""
models:
  - id: listed:1b
    name: Listed 1B
    backend: ollama
    capability: chat
    parameter_size: 1B
    context_length: 4096
    licence: MIT
    description: A model in the catalogue.
    aliases: [listed]
    variants:
      - {id: q4, ollama: "listed:1b", quantization: Q4_K_M, size_bytes: 1000}
""")
BODY: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}]}


def router(hub: Hub, *, queue_timeout_s: float = 10 * WAIT, max_waiters: int = 256) -> Router:
    return Router(hub, CATALOGUE, queue_timeout_s=queue_timeout_s, max_waiters=max_waiters)


def view(worker_id: str, *, in_flight: int, max_concurrent: int) -> WorkerView:
    now = datetime.now(UTC)
    return WorkerView(id=worker_id, name=worker_id, connected_at=now, last_seen=now,
                      max_concurrent=max_concurrent, in_flight=in_flight)


def frame(status: int, message: str = "it failed", **fields: object) -> Error:
    return Error(id="req_1", status=status, message=message, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def links() -> AsyncIterator[list[FakeLink]]:
    """Fake links the test creates; their serving tasks are stopped after it."""
    created: list[FakeLink] = []
    yield created
    for link in created:
        await link.aclose()


def fake(links: list[FakeLink], hub: Hub, worker_id: str, script: Script,
         *models: object, max_concurrent: int = 1) -> FakeLink:
    served = models or (model("m:latest"),)
    link = FakeLink(hub, worker_id, *served, script=script,  # type: ignore[arg-type]
                    max_concurrent=max_concurrent)
    links.append(link)
    return link


# --- resolve ------------------------------------------------------------------------------------------


async def test_resolve_takes_the_exact_id_else_the_latest_tag() -> None:
    """An id the hub serves resolves to itself; a bare name to ``<name>:latest`` when that is
    served; the exact id wins over the ``:latest`` fallback."""
    hub = new_hub()
    attach(hub, "wrk-a", model("m:latest"), model("q:7b"), model("both"), model("both:latest"))
    r = router(hub)
    assert r.resolve("m:latest") == "m:latest"
    assert r.resolve("m") == "m:latest"
    assert r.resolve("q:7b") == "q:7b"
    assert r.resolve("both") == "both"
    with pytest.raises(NotFound):
        r.resolve("q")  # a bare name falls back to :latest only, never to another tag


async def test_a_model_nobody_serves_is_404_saying_whether_the_catalogue_has_it() -> None:
    """404 for an unknown model points at GET /models; for a catalogue model (by id or alias)
    it says no connected worker has it installed yet."""
    r = router(new_hub())
    with pytest.raises(NotFound) as unknown:
        r.resolve("nope")
    assert unknown.value.status == 404 and "GET /api/v1/models" in unknown.value.message
    for name in ("listed:1b", "listed"):
        with pytest.raises(NotFound, match="in the catalogue but no connected worker has it"):
            r.resolve(name)


async def test_a_stranded_model_is_503_with_retry_after_not_404() -> None:
    """A model whose worker lost its backend is unavailable for now (503 + Retry-After), by its
    exact id or its bare name."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("m:latest"))
    link.inventory(inventory(verified=False))
    for name in ("m:latest", "m"):
        with pytest.raises(ModelUnavailable) as caught:
            router(hub).resolve(name)
        assert caught.value.status == 503 and caught.value.retry_after_s == RETRY_AFTER_S
        assert "ollama backend of worker 'wrk-a'" in caught.value.message


# --- candidates and choice ----------------------------------------------------------------------------


async def test_candidates_are_the_workers_whose_copy_can_do_the_kind() -> None:
    """Only workers serving the model, outside ``exclude``, whose copy can do the request kind;
    a kind no copy can do is refused before any worker is chosen."""
    hub = new_hub()
    attach(hub, "wrk-chat", model("m:latest", CHAT))
    attach(hub, "wrk-embed", model("m:latest", EMBED))
    attach(hub, "wrk-other", model("x:latest"))
    r = router(hub)
    assert [w.id for w in r.candidates("m:latest", kind="chat")] == ["wrk-chat"]
    assert [w.id for w in r.candidates("m:latest", kind="embed")] == ["wrk-embed"]
    assert sorted(w.id for w in r.candidates("m:latest")) == ["wrk-chat", "wrk-embed"]
    assert r.candidates("m:latest", exclude=["wrk-chat"], kind="chat") == []
    r.check_serves("chat", "m:latest")
    with pytest.raises(InvalidRequest) as caught:
        r.check_serves("image", "m:latest")
    assert caught.value.code == "model_not_supported" and caught.value.param == "model"
    assert "cannot serve image requests; it serves: chat, embedding" in caught.value.message


def test_least_loaded_prefers_the_lowest_share_then_fewer_in_flight() -> None:
    """The lowest in_flight/max_concurrent wins, then fewer in flight; full workers never;
    none free gives None; a true tie is broken at random."""
    assert Router.least_loaded([view("a", in_flight=1, max_concurrent=2),
                                view("b", in_flight=1, max_concurrent=4)]).id == "b"
    assert Router.least_loaded([view("a", in_flight=2, max_concurrent=4),
                                view("b", in_flight=1, max_concurrent=2)]).id == "b"
    assert Router.least_loaded([view("a", in_flight=1, max_concurrent=1),
                                view("b", in_flight=3, max_concurrent=4)]).id == "b"
    assert Router.least_loaded([view("a", in_flight=1, max_concurrent=1)]) is None
    assert Router.least_loaded([]) is None
    tied = [view("a", in_flight=0, max_concurrent=1), view("b", in_flight=0, max_concurrent=1)]
    assert {Router.least_loaded(tied).id for _ in range(200)} == {"a", "b"}


async def test_pick_waits_boundedly_for_a_slot() -> None:
    """All busy: pick waits and takes the slot that frees; with nothing freeing, NoCapacity (503
    with Retry-After) once ``queue_timeout_s`` passed; the waiting count returns to zero."""
    hub = new_hub()
    attach(hub, "wrk-a", model("m:latest"))
    r = router(hub, queue_timeout_s=0.05)
    handle = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    with pytest.raises(NoCapacity, match="stayed busy for 0.05s") as caught:
        await r.pick("m:latest", kind="chat")
    assert caught.value.status == 503 and caught.value.retry_after_s == RETRY_AFTER_S
    assert r.waiting == 0

    r = router(hub)
    picking = asyncio.create_task(r.pick("m:latest", kind="chat"))
    await eventually(lambda: r.waiting == 1)
    await handle.aclose()
    assert (await picking).id == "wrk-a" and r.waiting == 0
    with pytest.raises(NotFound):
        await r.pick("m:latest", exclude=["wrk-a"])


async def test_past_max_waiters_pick_refuses_at_once() -> None:
    """With ``max_waiters`` requests already waiting, the next is 503 straight away."""
    hub = new_hub()
    attach(hub, "wrk-a", model("m:latest"))
    hub.open_request("wrk-a", "chat", "m:latest", BODY)
    r = router(hub, max_waiters=1)
    waiting = asyncio.create_task(r.pick("m:latest"))
    await eventually(lambda: r.waiting == 1)
    with pytest.raises(NoCapacity, match="1 requests are already waiting"):
        await r.pick("m:latest")
    assert r.waiting == 1
    waiting.cancel()
    await asyncio.wait([waiting])
    assert r.waiting == 0


# --- whose fault ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("failure", "fault"), [
    (WorkerGone("wrk-a"), Fault.WORKER),
    *[(frame(s), Fault.CLIENT) for s in (400, 401, 403, 404, 409, 413, 422, 429, 499)],
    (frame(501), Fault.FINAL),
    (frame(503), Fault.OUTAGE),
    *[(frame(s), Fault.WORKER) for s in (500, 502, 504, 599)],
], ids=lambda v: f"status-{v.status}" if isinstance(v, Error)
    else v.value if isinstance(v, Fault) else "worker-gone")
def test_classify_decides_every_fault(failure: Error | WorkerGone, fault: Fault) -> None:
    """4xx is the client's, 501 final, 503 an outage, a disconnect or other 5xx the worker's."""
    assert classify(failure) is fault


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (409, "conflict_error"), (413, "invalid_request_error"),
    (422, "invalid_request_error"), (429, "rate_limit_error"), (418, "invalid_request_error")])
def test_a_client_fault_keeps_the_workers_text_and_status(status: int, kind: str) -> None:
    """A 4xx goes back with Ollama's text, its status and OpenAI's error type for that status."""
    worker = view("wrk-a", in_flight=0, max_concurrent=1)
    error = error_from_frame(frame(status, "model 'x' does not support tools"), worker)
    assert isinstance(error, WorkerRejected)
    assert (error.status, error.kind, error.message, error.code) == (
        status, kind, "model 'x' does not support tools", None)
    assert (error.worker_id, error.worker_name) == ("wrk-a", "wrk-a")


@pytest.mark.parametrize("message", [
    "the input length exceeds the context length", "prompt is longer than the context length",
    "Context Length Exceeded", "context_length_exceeded"])
def test_a_prompt_too_long_is_400_context_length_exceeded(message: str) -> None:
    """However Ollama says the context is too long (any 4xx), the client gets 400 with OpenAI's
    ``context_length_exceeded`` code."""
    worker = view("wrk-a", in_flight=0, max_concurrent=1)
    for status in (400, 413, 422):
        error = error_from_frame(frame(status, message), worker)
        assert (error.status, error.code) == (400, "context_length_exceeded")
    assert error_from_frame(frame(500, message), worker).status == 502  # a worker fault stays one


def test_worker_and_outage_faults_become_502_and_503() -> None:
    """501 is final with the frame's kind; 503 is ModelUnavailable with the worker's retry hint
    (rounded up, our default when it gives none); any other 5xx is 502 naming the worker, and a
    retry says which attempt it followed."""
    worker = view("wrk-b", in_flight=0, max_concurrent=1)
    final = error_from_frame(frame(501, "no images here", kind="unsupported"), worker)
    assert isinstance(final, WorkerRejected) and (final.status, final.kind) == (501, "unsupported")
    outage = error_from_frame(frame(503, "Ollama is restarting", retry_after_s=2.2), worker)
    assert isinstance(outage, ModelUnavailable) and outage.retry_after_s == 3
    assert "worker 'wrk-b' (wrk-b) cannot serve it for now: Ollama is restarting" in outage.message
    assert error_from_frame(frame(503, "down"), worker).retry_after_s == RETRY_AFTER_S
    failed = error_from_frame(frame(500, "boom"), worker, earlier="worker 'wrk-a' (wrk-a) failed")
    assert isinstance(failed, WorkerFailed) and failed.status == 502
    assert failed.message == ("worker 'wrk-b' (wrk-b) failed: boom; it was the retry after "
                              "worker 'wrk-a' (wrk-a) failed")
    assert (failed.worker_id, failed.worker_name) == ("wrk-b", "wrk-b")


# --- open: what is retried -----------------------------------------------------------------------------


def first_fails(failure: Script) -> Script:
    """A script shared by every worker: the first request (on whichever worker) runs
    ``failure``, later ones answer a chunk and end."""
    calls = 0

    async def script(link: FakeLink, req: Request) -> None:
        nonlocal calls
        calls += 1
        await (failure if calls == 1 else answer(chunk, end))(link, req)
    return script


async def hang_up(link: FakeLink, req: Request) -> None:
    """The worker's socket ends before it answers."""
    link.disconnect("socket closed")


async def test_open_returns_the_first_chunk_of_a_healthy_worker(links: list[FakeLink]) -> None:
    """A worker answering normally: ``open`` returns its first frame and the rest to iterate."""
    hub = new_hub()
    fake(links, hub, "wrk-a", answer(chunk, end))
    opened = await router(hub).open("chat", "m", BODY)
    assert opened.served == "m:latest" and opened.worker.id == "wrk-a"
    assert isinstance(opened.first, Chunk)
    assert [f.type async for f in opened.frames] == ["end"]
    await opened.handle.aclose()
    assert hub.get("wrk-a").in_flight == 0


@pytest.mark.parametrize("failure", [answer(error(500, "boom")), answer(error(502, "bad gateway")),
                                     answer(error(503, "restarting")), hang_up],
                         ids=["500", "502", "503", "disconnect"])
async def test_a_worker_fault_before_the_first_byte_is_retried_on_another(
        links: list[FakeLink], failure: Script) -> None:
    """A 5xx (not 501) or a disconnect before the first frame releases the slot and tries the
    request once more on a different worker."""
    hub = new_hub()
    script = first_fails(failure)
    a = fake(links, hub, "wrk-a", script)
    b = fake(links, hub, "wrk-b", script)
    opened = await router(hub).open("chat", "m:latest", BODY)
    served, failed = (a, b) if opened.worker.id == "wrk-a" else (b, a)
    assert isinstance(opened.first, Chunk)
    assert len(failed.requests) == 1 and len(served.requests) == 1
    assert failed.link.view.in_flight == 0
    await opened.handle.aclose()


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"),
                                              (404, "not_found_error"), (501, "unsupported")])
async def test_client_faults_and_501_are_never_retried(links: list[FakeLink], status: int,
                                                        kind: str) -> None:
    """The client's fault (4xx) and a backend that cannot do it (501) go back as they are, and no
    other worker sees the request."""
    hub = new_hub()
    script = answer(error(status, "refused", kind="unsupported"))
    a = fake(links, hub, "wrk-a", script)
    b = fake(links, hub, "wrk-b", script)
    with pytest.raises(WorkerRejected) as caught:
        await router(hub).open("chat", "m:latest", BODY)
    assert (caught.value.status, caught.value.kind, caught.value.message) == (status, kind, "refused")
    assert len(a.requests) + len(b.requests) == 1
    await eventually(lambda: a.link.view.in_flight == 0 and b.link.view.in_flight == 0)


async def test_two_worker_faults_give_502_naming_both(links: list[FakeLink]) -> None:
    """Attempts are bounded (MAX_ATTEMPTS): the second failure answers 502 naming that worker and
    the attempt it retried."""
    hub = new_hub()
    fake(links, hub, "wrk-a", answer(error(500, "boom")))
    fake(links, hub, "wrk-b", hang_up)
    with pytest.raises(WorkerFailed) as caught:
        await router(hub).open("chat", "m:latest", BODY)
    message = caught.value.message
    assert caught.value.status == 502
    # whichever went first, the message names both failures, the later one first
    assert "worker 'wrk-a' (wrk-a) failed: boom" in message
    assert "worker 'wrk-b' (wrk-b) disconnected before answering" in message
    assert "; it was the retry after worker" in message


@pytest.mark.parametrize(("failure", "expected", "says"), [
    (answer(error(500, "boom")), WorkerFailed, "failed: boom, and no other connected worker serves it"),
    (hang_up, WorkerFailed, "disconnected before answering"),
    (answer(error(503, "restarting", retry_after_s=4)), ModelUnavailable,
     "cannot serve it for now: restarting, and no other connected worker serves it"),
], ids=["500", "disconnect", "503"])
async def test_with_no_other_worker_the_first_fault_is_answered(
        links: list[FakeLink], failure: Script, expected: type[PendraError], says: str) -> None:
    """The only worker failing: 502 naming it, or for an outage 503 with its Retry-After."""
    hub = new_hub()
    fake(links, hub, "wrk-a", failure)
    with pytest.raises(expected) as caught:
        await router(hub).open("chat", "m:latest", BODY)
    assert says in caught.value.message
    if expected is ModelUnavailable:
        assert caught.value.retry_after_s == 4


async def test_a_retry_waits_for_a_busy_worker_boundedly(links: list[FakeLink]) -> None:
    """When the other worker stays busy, the retry gives up after the queue timeout with what the
    first worker did and that every other worker stayed busy."""
    hub = new_hub()
    fake(links, hub, "wrk-a", answer(error(500, "boom")))
    busy = attach(hub, "wrk-b", model("m:latest"))
    hub.open_request("wrk-b", "chat", "m:latest", BODY)  # its only slot, never released here
    r = router(hub, queue_timeout_s=0.05)
    with pytest.raises(WorkerFailed, match="every other worker serving it stayed busy"):
        await r.open("chat", "m:latest", BODY)
    assert busy.view.in_flight == 1 and hub.get("wrk-a").in_flight == 0


async def test_open_refuses_a_kind_the_model_cannot_do_before_choosing(
        links: list[FakeLink]) -> None:
    """Chat on an embedding-only model is 400 and reaches no worker."""
    hub = new_hub()
    a = fake(links, hub, "wrk-a", answer(chunk, end), model("e:latest", EMBED))
    with pytest.raises(InvalidRequest, match="cannot serve chat requests"):
        await router(hub).open("chat", "e", BODY)
    assert a.requests == []


# --- request kinds newer than a worker's protocol ------------------------------------------------------


async def test_complete_is_kept_from_workers_older_than_protocol_4() -> None:
    """``too_old`` lists the workers serving the model whose hello predates ``complete``; when
    they are all there is, the refusal is 501 naming at most three of them and the upgrade; kinds
    every version knows exclude nobody."""
    from pendra.errors import UnsupportedOperation

    hub = new_hub()
    for n in range(5):
        link = attach(hub, f"wrk-old{n}", model("m:latest"))
        link.view.protocol_version = 3
    r = router(hub)
    assert r.too_old("chat", "m:latest") == []
    with pytest.raises(UnsupportedOperation) as refused:
        r.too_old("complete", "m:latest")
    assert refused.value.status == 501
    assert "'wrk-old0' (protocol 3)" in refused.value.message
    assert "and 2 more" in refused.value.message and "protocol version 4" in refused.value.message
    attach(hub, "wrk-new", model("m:latest"))
    assert sorted(r.too_old("complete", "m:latest")) == [f"wrk-old{n}" for n in range(5)]

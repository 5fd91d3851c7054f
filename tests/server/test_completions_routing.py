"""``POST /completions`` on the control plane: the ``complete`` request kind goes only to workers
speaking protocol version 4 or later; a model served only by older workers is a clear 501 that
says to upgrade them, and nothing is sent to them. Usage rows carry the ``completions`` kind."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import select

from api_fixtures import TIMEOUT_S, Api, FakeWorker, answer, fleet, sse_events
from polling import eventually
from pendra.protocol.frames import Chunk, End, Request
from pendra.server.store.tables import Usage

BODY = {"model": "llama3.2:latest", "prompt": "def f(x):", "max_tokens": 8}


def text_completion(model: str, text: str) -> dict[str, Any]:
    return {"id": "cmpl-test", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": [{"text": text, "index": 0, "logprobs": None,
                                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


async def completes(worker: FakeWorker, req: Request) -> None:
    """A version-4 worker: answers ``complete`` (both ways) and everything else as usual."""
    if req.kind != "complete":
        await answer(worker, req)
        return
    if req.body.get("stream"):
        for piece in ("a ", "b"):
            chunk = text_completion(req.model, piece)
            chunk["choices"][0]["finish_reason"] = None
            del chunk["usage"]
            await worker.send(Chunk(id=req.id, data=chunk))
    else:
        await worker.send(Chunk(id=req.id, data=text_completion(req.model, "return x")))
    await worker.send(End(id=req.id, usage={"prompt_tokens": 3, "completion_tokens": 2},
                          finish_reason="stop"))


def client(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S,
                             headers={"Authorization": f"Bearer {api.key}"})


async def test_a_protocol_3_worker_is_never_sent_a_completion(api: Api) -> None:
    """With only a version-3 worker serving the model, a completion is 501 naming the worker and
    the upgrade it needs, and the worker receives no request; chat still goes to it."""
    async with fleet(api, FakeWorker("elder", protocol_version=3, script=completes)) as (elder,):
        async with client(api) as http:
            refused = await http.post("/v1/completions", json=BODY)
            chat = await http.post("/v1/chat/completions", json={
                "model": "llama3.2:latest", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 501, refused.text
    message = refused.json()["error"]["message"]
    assert "'elder' (protocol 3)" in message and "upgrade" in message and "4" in message
    assert refused.headers["x-request-id"]
    assert [r.kind for r in elder.requests] == ["chat"] and chat.status_code == 200


async def test_completions_go_only_to_workers_that_speak_protocol_4(api: Api) -> None:
    """Beside a version-3 worker, every completion (whole and streamed) goes to the version-4
    one; the answer is relayed as it came, SSE ending with [DONE]."""
    old = FakeWorker("elder", protocol_version=3, script=completes)
    new = FakeWorker("younger", script=completes)
    async with fleet(api, old, new):
        async with client(api) as http:
            for _ in range(6):
                whole = await http.post("/api/v1/completions", json=BODY)
                assert whole.status_code == 200, whole.text
                assert whole.json()["choices"][0]["text"] == "return x"
                assert whole.headers["x-worker-name"] == "younger"
            streamed = await http.post("/v1/completions", json={**BODY, "stream": True})
    assert streamed.status_code == 200
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]" and len(events) == 3
    assert old.requests == [] and len(new.requests) == 7
    assert {r.kind for r in new.requests} == {"complete"}
    assert new.requests[0].body == BODY  # the validated body, as sent


async def test_completion_usage_rows_have_their_own_kind(api: Api) -> None:
    """A completion leaves one usage row of kind ``completions`` with the worker's counts."""
    async with fleet(api, FakeWorker("younger", script=completes)):
        async with client(api) as http:
            assert (await http.post("/v1/completions", json=BODY)).status_code == 200

        async def rows() -> list[Usage]:
            async with api.app.state.store.session() as session:
                return list((await session.execute(select(Usage))).scalars())

        [row] = await eventually(rows, what="the usage row")
    assert row.kind == "completions" and row.prompt_tokens == 3 and row.completion_tokens == 2

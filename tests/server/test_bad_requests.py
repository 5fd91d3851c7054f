"""A client's bad request is the client's problem: 400 at the edge, never a worker's socket.

A real server and fake workers on real WebSockets (api_fixtures.py). Each test sends what a key
holder could send on purpose, and checks the answer, what the workers saw, and that the workers
and the other streams on them are unharmed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from api_fixtures import (CHAT_MODEL, EMBED_MODEL, IMAGE_MODEL, TIMEOUT_S, Api, FakeWorker,
                          fail_with, fleet, hold, sse_events)
from pendra.errors import InvalidRequest
from pendra.protocol.frames import Error, Request
from pendra.server.api.body_types import MAX_JSON_DEPTH

HELLO = [{"role": "user", "content": "hello"}]
# The depth that broke the worker frame's serialiser (~255) with room to spare.
DEEP = 260


def http(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S, headers=api.headers)


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": HELLO} | fields


async def post_raw(client: httpx.AsyncClient, path: str, text: str) -> httpx.Response:
    """POST ``text`` as the JSON body byte for byte (json= would refuse a lone surrogate)."""
    return await client.post(path, content=text.encode("ascii"),
                             headers={"content-type": "application/json"})


LONE_SURROGATE = '{"model": "llama3.2", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
SURROGATE_IN_EXTRA = ('{"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], '
                      '"metadata": {"note": "\\udfff"}}')


async def test_unencodable_bodies_are_400_and_leave_every_worker_and_stream_alone(
        api: Api) -> None:
    """A lone surrogate (in a message or in a pass-through field) and a field nested 260 deep
    are refused with 400 naming the field, before any worker is chosen: both workers stay
    connected, never see the request, and the streams they were serving complete with [DONE]."""
    release = asyncio.Event()
    alpha = FakeWorker("alpha", max_concurrent=2, script=hold(release))
    beta = FakeWorker("beta", max_concurrent=2, script=hold(release))
    async with fleet(api, alpha, beta), http(api) as client:
        streams = [asyncio.create_task(client.post("/api/v1/chat/completions",
                                                   json=chat(stream=True))) for _ in range(2)]
        await alpha.wait_for(lambda: len(alpha.requests) + len(beta.requests) == 2)
        assert len(alpha.requests) == len(beta.requests) == 1  # one stream on each
        answers = [
            ("messages[0].content", await post_raw(client, "/api/v1/chat/completions",
                                                   LONE_SURROGATE)),
            ("metadata", await post_raw(client, "/api/v1/chat/completions", SURROGATE_IN_EXTRA)),
            ("messages[0].content[0]", await client.post("/api/v1/chat/completions", json=chat(
                messages=[{"role": "user", "content": nested(DEEP)}]))),
            ("tools[0].function.parameters", await client.post(
                "/api/v1/chat/completions", json=chat(tools=[{"type": "function", "function": {
                    "name": "f", "parameters": {"type": "object", "x": nested(DEEP)}}}]))),
            ("deep", await client.post("/api/v1/chat/completions", json=chat(deep=nested(DEEP)))),
            ("input", await post_raw(client, "/api/v1/embeddings",
                                     '{"model": "nomic-embed-text", "input": "\\ud800"}')),
        ]
        for param, response in answers:
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["param"] == param, error
            assert response.headers["x-request-id"]
        hub = api.app.state.hub
        assert hub.get(alpha.worker_id) is not None and hub.get(beta.worker_id) is not None
        release.set()
        for stream in streams:
            done = await stream
            assert done.status_code == 200 and sse_events(done.text)[-1] == "[DONE]"
    assert len(alpha.requests) == len(beta.requests) == 1


async def test_depth_limit_is_a_bound_not_a_ban_on_nesting(api: Api) -> None:
    """A free-form value nested MAX_JSON_DEPTH deep goes through; one level more is 400."""
    async with fleet(api, FakeWorker("alpha")) as (alpha,), http(api) as client:
        inside = await client.post("/api/v1/chat/completions",
                                   json=chat(deep=nested(MAX_JSON_DEPTH)))
        past = await client.post("/api/v1/chat/completions",
                                 json=chat(deep=nested(MAX_JSON_DEPTH + 1)))
    assert inside.status_code == 200, inside.text
    assert past.status_code == 400 and past.json()["error"]["param"] == "deep"
    assert len(alpha.requests) == 1


@pytest.mark.parametrize(("fields", "param"), [
    ({"stop": 5}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stream_options": "x"}, "stream_options"),
    ({"messages": [{"role": "assistant", "tool_calls": ["x"]}]}, "messages[0].tool_calls[0]"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {
        "name": "f", "arguments": "{not json"}}]}]}, "messages[0].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "user", "content": [{"type": "audio", "x": 1}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"content": "no role"}]}, "messages[0].role"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"max_tokens": "ten"}, "max_tokens"),
    ({"max_tokens": -5}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"options": {"num_ctx": -1}}, "options.num_ctx"),
    ({"options": {"temperature": "warm"}}, "options.temperature"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"n": 3}, "n"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     "tools[0].function.name"),
], ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v)
async def test_chat_fields_with_the_wrong_type_or_range_are_400_naming_them(
        api: Api, fields: dict[str, Any], param: str) -> None:
    """Every field Pendra maps has OpenAI's type and range: a body that breaks one is 400
    invalid_request_error with ``param`` naming it, and never reaches a worker."""
    async with fleet(api, FakeWorker("alpha")) as (alpha,), http(api) as client:
        response = await client.post("/api/v1/chat/completions", json=chat(**fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert param.split("[")[0].split(".")[0] in error["message"]
    assert alpha.requests == []


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/api/v1/embeddings", {"model": EMBED_MODEL.id, "input": []}, "input"),
    ("/api/v1/embeddings", {"model": EMBED_MODEL.id, "input": "x", "dimensions": 0},
     "dimensions"),
    ("/api/v1/embeddings", {"model": EMBED_MODEL.id, "input": "x", "encoding_format": "hex"},
     "encoding_format"),
    ("/api/v1/images/generations", {"model": IMAGE_MODEL.id, "prompt": "p", "size": "big"},
     "size"),
    ("/api/v1/images/generations", {"model": IMAGE_MODEL.id, "prompt": "p", "n": 11}, "n"),
    ("/api/v1/images/generations", {"model": IMAGE_MODEL.id, "prompt": "p",
                                    "response_format": "gif"}, "response_format"),
], ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else None)
async def test_embedding_and_image_fields_are_typed_too(api: Api, path: str,
                                                        body: dict[str, Any], param: str) -> None:
    """Embeddings (input, dimensions, encoding_format) and images (size, n, response_format)
    are refused at the edge the same way."""
    async with fleet(api, FakeWorker("alpha")) as (alpha,), http(api) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert alpha.requests == []


async def test_a_request_the_hub_cannot_encode_fails_alone(api: Api) -> None:
    """Defence in depth below the edge: a request body the hub cannot encode for the worker is
    InvalidRequest from ``open_request`` before a slot is taken; and a frame that slips into a
    worker's outbox unencodable is dropped by the socket writer, which carries on: the worker
    stays connected and answers the next request."""
    async with fleet(api, FakeWorker("alpha")) as (alpha,), http(api) as client:
        hub = api.app.state.hub
        for body in ({"messages": "a\ud800"}, {"deep": nested(DEEP)}):
            with pytest.raises(InvalidRequest, match="cannot be sent to a worker"):
                hub.open_request(alpha.worker_id, "chat", CHAT_MODEL.id, body)
        assert hub.get(alpha.worker_id).in_flight == 0
        link = hub._links[alpha.worker_id]
        assert link.offer(Request(id="req_bad", kind="chat", model=CHAT_MODEL.id,
                                  body={"deep": nested(DEEP)}))
        response = await client.post("/api/v1/chat/completions", json=chat())
        assert response.status_code == 200, response.text
        assert hub.get(alpha.worker_id) is not None
    assert [r.id for r in alpha.requests] == [alpha.requests[0].id] != ["req_bad"]


# --- what the model can do ---------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "wanted"), [
    ("/api/v1/chat/completions", {"model": EMBED_MODEL.id, "messages": HELLO}, "chat"),
    ("/api/v1/embeddings", {"model": CHAT_MODEL.id, "input": "x"}, "embedding"),
    ("/api/v1/images/generations", {"model": CHAT_MODEL.id, "prompt": "p"}, "image"),
], ids=["chat-on-embedding", "embed-on-chat", "image-on-chat"])
async def test_a_model_that_cannot_serve_the_request_is_refused_not_forwarded(
        api: Api, path: str, body: dict[str, Any], wanted: str) -> None:
    """Chat on an embedding-only model, embeddings on a chat model, images on a model without
    image generation: 400 naming the model and what it serves; no worker sees it."""
    async with fleet(api, FakeWorker("alpha")) as (alpha,), http(api) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "model" and error["type"] == "invalid_request_error"
    assert body["model"] in error["message"] and wanted in error["message"]
    assert alpha.requests == []


async def test_images_go_only_where_the_model_can_generate_them(api: Api) -> None:
    """The same model id on two workers, image generation only on one's Ollama (the other's
    discovery does not list it as an image model): image requests always go to the capable
    worker, even when the other is less loaded."""
    old = FakeWorker("old", models=(replace(IMAGE_MODEL, capabilities=()),), max_concurrent=4)
    new = FakeWorker("new", models=(IMAGE_MODEL,), max_concurrent=4)
    async with fleet(api, old, new), http(api) as client:
        api.app.state.hub.get(new.worker_id).in_flight = 2  # make "old" the least loaded
        for _ in range(3):
            response = await client.post("/api/v1/images/generations",
                                         json={"model": IMAGE_MODEL.id, "prompt": "p"})
            assert response.status_code == 200 and response.headers["x-worker-name"] == "new"
    assert old.requests == [] and len(new.requests) == 3


# --- errors classified once ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "message", "answer", "kind", "code"), [
    (400, "registry.ollama.ai/library/llama3.2 does not support tools", 400,
     "invalid_request_error", None),
    (404, "model 'llama3.2' not found", 404, "not_found_error", None),
    (400, "the prompt is longer than the context length currently available to the model", 400,
     "invalid_request_error", "context_length_exceeded"),
    (413, "the input length exceeds the context length", 400, "invalid_request_error",
     "context_length_exceeded"),
], ids=["tools", "not-found", "context", "context-413"])
async def test_a_worker_4xx_is_the_clients_answer_and_never_retried(
        api: Api, status: int, message: str, answer: int, kind: str, code: str | None) -> None:
    """Ollama's own 4xx reaches the client with its text and OpenAI's error type (and code for a
    context that is too long); the request is not tried on the other worker."""
    one = FakeWorker("one", script=fail_with(status, message, kind="backend_rejected"))
    two = FakeWorker("two", script=fail_with(status, message, kind="backend_rejected"))
    async with fleet(api, one, two), http(api) as client:
        response = await client.post("/api/v1/chat/completions", json=chat())
    assert response.status_code == answer, response.text
    error = response.json()["error"]
    assert error["type"] == kind and error["code"] == code and message in error["message"]
    assert len(one.requests) + len(two.requests) == 1


def outage(retry_after_s: float | None) -> Any:
    async def script(worker: FakeWorker, req: Request) -> None:
        await worker.send(Error(id=req.id, status=503, kind="backend_unavailable",
                                message="Ollama is restarting", retry_after_s=retry_after_s))
    return script


@pytest.mark.parametrize(("hint", "header"), [(7.2, "8"), (None, "2")], ids=["hinted", "default"])
async def test_a_backend_outage_with_no_other_worker_is_503_with_retry_after(
        api: Api, hint: float | None, header: str) -> None:
    """A worker answering 503 (its Ollama is down or restarting) is not at fault: with no other
    worker serving the model the client gets 503 with Retry-After (the worker's hint, rounded up,
    else 2 s), not 502."""
    async with fleet(api, FakeWorker("lone", script=outage(hint))) as (lone,), \
            http(api) as client:
        response = await client.post("/api/v1/chat/completions", json=chat())
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == header
    assert "restarting" in response.json()["error"]["message"] and len(lone.requests) == 1


async def test_a_worker_501_is_final(api: Api) -> None:
    """A 501 (the backend cannot do this at all) is answered as it is, not retried elsewhere."""
    one = FakeWorker("one", script=fail_with(501, "no can do", kind="unsupported"))
    two = FakeWorker("two", script=fail_with(501, "no can do", kind="unsupported"))
    async with fleet(api, one, two), http(api) as client:
        response = await client.post("/api/v1/chat/completions", json=chat())
    assert response.status_code == 501 and response.json()["error"]["type"] == "unsupported"
    assert len(one.requests) + len(two.requests) == 1


async def test_tool_choice_that_cannot_be_honoured_is_refused_at_the_edge(api: Api) -> None:
    """tool_choice "required" (Ollama cannot force a call) or naming a function that is not among
    the tools is a 400 naming tool_choice, before any worker is chosen."""
    tools = [{"type": "function", "function": {"name": "a", "parameters": {}}}]
    async with httpx.AsyncClient(base_url=api.base_url, headers=api.headers) as client:
        for choice in ("required", {"type": "function", "function": {"name": "zzz"}}):
            reply = await client.post("/v1/chat/completions", json={
                "model": CHAT_MODEL.id, "messages": [{"role": "user", "content": "hi"}],
                "tools": tools, "tool_choice": choice})
            assert reply.status_code == 400, reply.text
            assert reply.json()["error"]["param"] == "tool_choice"

"""The OpenAI-compatible API over a real server and fake workers on real WebSockets.

The official ``openai`` SDK is the client wherever it can be; raw httpx where the test needs to see
bytes (SSE framing, headers on errors, chunked uploads).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from api_fixtures import (ADMIN_TOKEN, CHAT_MODEL, EMBED_MODEL, TIMEOUT_S, USAGE, Api,
                          FakeWorker, drop, drop_after, fail_with, fleet, hold, running_api,
                          sse_events, stream_forever)
from pendra.server.store import usage as usage_store
from polling import eventually

HELLO = [{"role": "user", "content": "the secret prompt text"}]


# Every SDK client a test made, closed after it (an open pool is a leaked socket).
_clients: list[AsyncOpenAI] = []


@pytest.fixture(autouse=True)
async def close_sdk_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


def sdk(api: Api, *, root: str = "/api/v1", key: str | None = None) -> AsyncOpenAI:
    client = AsyncOpenAI(base_url=api.base_url + root, api_key=key or api.key, max_retries=0,
                         timeout=TIMEOUT_S)
    _clients.append(client)
    return client


def http(api: Api, *, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S, headers=headers)


async def usage_rows(api: Api) -> list[usage_store.Usage]:
    await api.app.state.usage.flush()
    async with api.app.state.store.session() as session:
        return list(reversed(await usage_store.recent_usage(session, 100)))


# --- inference through the SDK --------------------------------------------------------------------


async def test_chat_non_stream_carries_worker_and_request_headers(api: Api,
                                                                  alpha: FakeWorker) -> None:
    """A non-streaming chat returns the worker's chat.completion with X-Request-Id and the
    worker's id and name; the worker got the body as sent, extra fields included."""
    raw = await sdk(api).chat.completions.with_raw_response.create(
        model="llama3.2", messages=HELLO, extra_body={"options": {"num_ctx": 8192}})
    reply = raw.parse()
    assert reply.choices[0].message.content == "hello from alpha"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-worker-id"] == alpha.worker_id
    assert raw.headers["x-worker-name"] == "alpha"
    sent = alpha.requests[-1]
    assert sent.kind == "chat" and sent.model == "llama3.2:latest"
    assert sent.body["options"] == {"num_ctx": 8192} and sent.body["model"] == "llama3.2"


async def test_chat_stream_relays_chunks_then_done(api: Api, alpha: FakeWorker) -> None:
    """Streaming relays every chunk in order as SSE and ends with [DONE]."""
    stream = await sdk(api).chat.completions.create(model="llama3.2:latest", messages=HELLO,
                                                    stream=True)
    text, finish = "", None
    async for chunk in stream:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == "one two three" and finish == "stop"
    async with http(api, key=api.key) as client:
        response = await client.post("/api/v1/chat/completions", json={
            "model": "llama3.2:latest", "messages": HELLO, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"  # sse.HEADERS, as for every stream
    assert response.headers["x-worker-name"] == "alpha" and response.headers["x-request-id"]
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and len(events) == 5


async def test_embeddings_images_and_models_through_the_sdk(api: Api, alpha: FakeWorker) -> None:
    """Embeddings and images are routed like chat; /models lists what the worker serves."""
    client = sdk(api)
    embedded = await client.embeddings.create(model=EMBED_MODEL.id, input=["a", "b"])
    assert [d.index for d in embedded.data] == [0, 1]
    image = await client.images.generate(model="x/z-image-turbo", prompt="a red square")
    assert base64.b64decode(image.data[0].b64_json or "").startswith(b"\x89PNG")
    assert [r.kind for r in alpha.requests] == ["embed", "image"]
    ids = {m.id async for m in client.models.list()}
    assert ids == {"llama3.2:latest", "nomic-embed-text:latest", "x/z-image-turbo:latest"}
    model = await client.models.retrieve("llama3.2")
    assert model.id == "llama3.2:latest" and model.owned_by == "pendra"


async def test_v1_root_alias_serves_the_same_api(api: Api, alpha: FakeWorker) -> None:
    """An SDK configured with <server>/v1 reaches the same handlers."""
    reply = await sdk(api, root="/v1").chat.completions.create(model="llama3.2", messages=HELLO)
    assert reply.choices[0].message.content == "hello from alpha"
    assert [m.id async for m in sdk(api, root="/v1").models.list()]


async def test_models_filter_by_type_and_describe_workers(api: Api, alpha: FakeWorker) -> None:
    """?type= filters by capability; an unknown type is 400; entries name their workers."""
    async with http(api, key=api.key) as client:
        embedding = (await client.get("/api/v1/models", params={"type": "embedding"})).json()
        assert [m["id"] for m in embedding["data"]] == ["nomic-embed-text:latest"]
        assert embedding["data"][0]["pendra"]["workers"] == ["alpha"]
        image = (await client.get("/api/v1/models", params={"type": "image"})).json()
        assert [m["id"] for m in image["data"]] == ["x/z-image-turbo:latest"]
        bad = await client.get("/api/v1/models", params={"type": "telepathy"})
        assert bad.status_code == 400 and "telepathy" in bad.json()["error"]["message"]
        codex = (await client.get("/api/v1/models", params={"client_version": "1"})).json()
        assert len(codex["models"]) == 3


# --- errors clients see --------------------------------------------------------------------------------


async def test_keys_absent_unknown_and_revoked_are_401(api: Api, alpha: FakeWorker) -> None:
    """No key, an unknown key and a revoked key get 401 saying why; revocation through the admin
    API is immediate; the x-api-key header works too."""
    async with http(api) as client:
        absent = await client.get("/api/v1/models")
        assert absent.status_code == 401 and "missing API key" in absent.json()["detail"]
        assert absent.headers["x-request-id"]
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        await sdk(api, key="pdr_sk_" + "x" * 43).models.list()
    key = await api.new_key("short-lived")
    assert [m async for m in sdk(api, key=key).models.list()]
    async with http(api) as client:
        revoked = await client.post("/api/v1/keys/revoke", json={"key": key[:12]},
                                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
    with pytest.raises(openai.AuthenticationError):
        await sdk(api, key=key).chat.completions.create(model="llama3.2", messages=HELLO)
    async with httpx.AsyncClient(base_url=api.base_url, headers={"x-api-key": api.key}) as client:
        assert (await client.get("/api/v1/models")).status_code == 200


async def test_unknown_model_404_says_whether_it_is_catalogued(api: Api,
                                                               alpha: FakeWorker) -> None:
    """A catalogued model installed nowhere and an unknown model get different 404 messages."""
    client = sdk(api)
    with pytest.raises(openai.NotFoundError, match="in the catalogue but no connected worker"):
        await client.chat.completions.create(model="gemma3:1b", messages=HELLO)
    with pytest.raises(openai.NotFoundError, match="'no-such-model' not found; GET /api/v1/models"):
        await client.chat.completions.create(model="no-such-model", messages=HELLO)
    with pytest.raises(openai.NotFoundError, match="in the catalogue"):
        await client.models.retrieve("all-minilm")


async def test_bad_bodies_are_400_naming_the_problem(api: Api, alpha: FakeWorker) -> None:
    """Malformed JSON, a missing or empty messages list and a missing model are 400s that say
    which; no request reaches the worker."""
    async with http(api, key=api.key) as client:
        broken = await client.post("/api/v1/chat/completions", content=b"{not json",
                                   headers={"content-type": "application/json"})
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["detail"]
        assert broken.headers["x-request-id"]
        missing = await client.post("/api/v1/chat/completions", json={"model": "llama3.2"})
        assert missing.status_code == 400 and "'messages'" in missing.json()["detail"]
        empty = await client.post("/api/v1/chat/completions",
                                  json={"model": "llama3.2", "messages": []})
        assert empty.status_code == 400 and "'messages'" in empty.json()["detail"]
        no_model = await client.post("/api/v1/embeddings", json={"input": "x"})
        assert no_model.status_code == 400 and "'model'" in no_model.json()["detail"]
        body = no_model.json()
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "model"
    assert alpha.requests == []


async def test_worker_4xx_goes_back_to_the_client_unretried(api: Api) -> None:
    """A worker's 4xx (Ollama: 'does not support tools') is the client's answer, with that status
    and message and the worker's headers; the other worker is not tried."""
    refuse = fail_with(400, "registry.ollama.ai/library/llama3.2 does not support tools",
                       kind="invalid_request_error")
    async with fleet(api, FakeWorker("picky", script=refuse)) as (picky,):
        async with http(api, key=api.key) as client:
            response = await client.post("/api/v1/chat/completions", json={
                "model": "llama3.2", "messages": HELLO, "tools": []})
    assert response.status_code == 400
    assert "does not support tools" in response.json()["error"]["message"]
    assert response.headers["x-worker-name"] == "picky"
    assert len(picky.requests) == 1


async def test_transcription_without_a_capable_worker_is_a_clear_501(api: Api,
                                                                     alpha: FakeWorker) -> None:
    """No connected worker can transcribe: 501 that says so."""
    async with http(api, key=api.key) as client:
        response = await client.post("/api/v1/audio/transcriptions", json={"model": "whisper"})
    assert response.status_code == 501
    assert "no connected worker serves a transcription model" in response.json()["detail"]


# --- routing: failures, capacity, cancellation ---------------------------------------------------------


@pytest.mark.parametrize("failure", [drop, fail_with(503, "Ollama is not answering",
                                                     kind="backend_unavailable")],
                         ids=["drops", "answers-503"])
async def test_failure_before_first_byte_is_retried_on_another_worker(api: Api,
                                                                      failure: object) -> None:
    """When the first worker fails before answering, the request is retried once elsewhere and
    the client only sees the second worker's answer."""
    broken = FakeWorker("broken", script=failure)  # type: ignore[arg-type]
    healthy = FakeWorker("healthy", max_concurrent=2)
    async with fleet(api, broken, healthy):
        # Make "broken" the least loaded (0/1 against 1/2), so it is deterministically the first
        # pick; the retry then takes healthy's free slot.
        api.app.state.hub.get(healthy.worker_id).in_flight = 1
        raw = await sdk(api).chat.completions.with_raw_response.create(model="llama3.2",
                                                                       messages=HELLO)
        assert raw.headers["x-worker-name"] == "healthy"
        assert raw.parse().choices[0].message.content == "hello from healthy"
        assert len(broken.requests) == 1 and len(healthy.requests) == 1


async def test_second_failure_is_502_naming_the_worker(api: Api) -> None:
    """With no other worker to retry on, the client gets 502 naming the worker that failed."""
    async with fleet(api, FakeWorker("lonely", script=fail_with(500, "GPU on fire"))) as (lonely,):
        async with http(api, key=api.key) as client:
            response = await client.post("/api/v1/chat/completions",
                                         json={"model": "llama3.2", "messages": HELLO})
    assert response.status_code == 502
    assert response.headers["x-worker-id"] == lonely.worker_id
    assert response.headers["x-worker-name"] == "lonely"
    message = response.json()["error"]["message"]
    assert "lonely" in message and "GPU on fire" in message and "no other" in message


async def test_drop_mid_stream_ends_with_an_error_event_not_done(api: Api) -> None:
    """A worker that dies mid-stream gives the client an SSE error event and no [DONE]."""
    async with fleet(api, FakeWorker("flaky", script=drop_after(2))):
        async with http(api, key=api.key) as client:
            response = await client.post("/api/v1/chat/completions", json={
                "model": "llama3.2", "messages": HELLO, "stream": True})
        events = sse_events(response.text)
        assert response.status_code == 200
        assert "[DONE]" not in events
        error = json.loads(events[-1])["error"]
        assert error["type"] == "worker_error" and "flaky" in error["message"]
        assert len(events) == 3


async def test_drop_mid_stream_raises_in_the_sdk(api: Api) -> None:
    """The openai SDK turns the error event into an exception instead of a clean end."""
    async with fleet(api, FakeWorker("flaky", script=drop_after(2))):
        stream = await sdk(api).chat.completions.create(model="llama3.2", messages=HELLO,
                                                        stream=True)
        with pytest.raises(openai.APIError, match="flaky"):
            async for _ in stream:
                pass


async def test_client_disconnect_cancels_the_request_on_the_worker(api: Api) -> None:
    """A client that goes away mid-stream makes the worker receive Cancel, and frees the slot."""
    async with fleet(api, FakeWorker("streamer", script=stream_forever())) as (worker,):
        async with http(api, key=api.key) as client:
            async with client.stream("POST", "/api/v1/chat/completions", json={
                    "model": "llama3.2", "messages": HELLO, "stream": True}) as response:
                got = 0
                async for line in response.aiter_lines():
                    got += line.startswith("data: ")
                    if got == 3:
                        break
        await worker.wait_for(lambda: bool(worker.cancelled))
        assert worker.cancelled == [worker.requests[0].id]
        hub = api.app.state.hub
        await eventually(lambda: not hub.get(worker.worker_id).in_flight)
    rows = await usage_rows(api)
    assert rows[-1].status == 499 and rows[-1].stream


async def test_no_capacity_is_503_with_retry_after_after_a_bounded_wait(tmp_path: Path) -> None:
    """With the only slot busy, a second request waits queue_timeout, then gets 503 with
    Retry-After; once the slot frees, requests are served again."""
    release = asyncio.Event()
    async with running_api(tmp_path, queue_timeout_s=0.3) as api:
        async with fleet(api, FakeWorker("busy", script=hold(release))):
            async with http(api, key=api.key) as client:
                first = asyncio.create_task(client.post(
                    "/api/v1/chat/completions", json={"model": "llama3.2", "messages": HELLO}))
                hub = api.app.state.hub
                await eventually(lambda: any(w.in_flight for w in hub.connected()))
                second = await client.post("/api/v1/chat/completions",
                                           json={"model": "llama3.2", "messages": HELLO})
                assert second.status_code == 503
                assert int(second.headers["retry-after"]) >= 1
                assert second.json()["error"]["type"] == "overloaded_error"
                release.set()
                assert (await first).status_code == 200


async def test_a_waiting_request_gets_the_slot_when_it_frees(tmp_path: Path) -> None:
    """A request queued behind a busy slot is served as soon as the slot frees."""
    release = asyncio.Event()
    async with running_api(tmp_path, queue_timeout_s=5 * TIMEOUT_S) as api:
        async with fleet(api, FakeWorker("busy", script=hold(release))):
            async with http(api, key=api.key) as client:
                calls = [asyncio.create_task(client.post(
                    "/api/v1/chat/completions", json={"model": "llama3.2", "messages": HELLO}))
                    for _ in range(2)]
                await eventually(lambda: api.app.state.router.waiting >= 1)
                release.set()
                assert [(await c).status_code for c in calls] == [200, 200]


# --- usage, status, catalogue, odds and ends ------------------------------------------------------------


async def test_usage_rows_have_tokens_workers_and_no_content(api: Api, alpha: FakeWorker) -> None:
    """Each request leaves one usage row with key, models, worker, tokens, status and latency,
    and no prompt or completion text anywhere in it; failures are recorded too."""
    await sdk(api).chat.completions.create(model="llama3.2", messages=HELLO)
    stream = await sdk(api).chat.completions.create(model="llama3.2", messages=HELLO, stream=True)
    async for _ in stream:
        pass
    with pytest.raises(openai.NotFoundError):
        await sdk(api).chat.completions.create(model="no-such-model", messages=HELLO)
    rows = await usage_rows(api)
    assert [(r.kind, r.stream, r.status) for r in rows] == [
        ("chat", False, 200), ("chat", True, 200), ("chat", False, 404)]
    ok = rows[0]
    assert (ok.model_requested, ok.model_served) == ("llama3.2", "llama3.2:latest")
    assert (ok.worker_id, ok.worker_name) == (alpha.worker_id, "alpha")
    assert (ok.prompt_tokens, ok.completion_tokens) == (USAGE["prompt_tokens"],
                                                        USAGE["completion_tokens"])
    assert ok.key_id and ok.request_id.startswith("req_") and ok.latency_ms >= 0
    assert rows[2].worker_id is None and "not found" in (rows[2].error or "")
    for row in rows:
        values = " ".join(str(getattr(row, c.key)) for c in row.__table__.columns)
        assert "secret prompt" not in values and "hello from" not in values


async def test_status_needs_a_key_or_the_admin_token(api: Api, alpha: FakeWorker) -> None:
    """/status lists connected workers with load, backends and models, for a key or the local
    admin token; without either it is 401."""
    async with http(api) as client:
        assert (await client.get("/api/v1/status")).status_code == 401
    for credential in (api.key, ADMIN_TOKEN):
        async with http(api, key=credential) as client:
            status = (await client.get("/api/v1/status")).json()
        (worker,) = status["workers"]
        assert (worker["name"], worker["in_flight"], worker["max_concurrent"]) == ("alpha", 0, 1)
        assert worker["backends"][0]["kind"] == "ollama"
        assert CHAT_MODEL.id in worker["models"] and CHAT_MODEL.id in status["models"]


async def test_catalogue_is_public_and_health_and_docs_answer(api: Api) -> None:
    """The catalogue, /healthz and the API docs need no key; every response has a request id."""
    async with http(api) as client:
        catalogue = await client.get("/api/v1/catalogue")
        assert catalogue.status_code == 200
        entries = {e["id"]: e for e in catalogue.json()["data"]}
        assert entries["gemma3:1b"]["variants"][0]["ollama"] == "gemma3:1b"
        assert (await client.get("/v1/catalogue")).status_code == 200
        health = await client.get("/healthz")
        assert health.json() == {"status": "ok"} and health.headers["x-request-id"]
        schema = (await client.get("/api/v1/openapi.json")).json()
        assert "/api/v1/chat/completions" in schema["paths"]
        assert not any(p.startswith("/v1/") for p in schema["paths"])
        for path in ("/api/v1/docs", "/api/v1/redoc"):
            assert (await client.get(path)).status_code == 200


async def test_worker_disconnect_removes_its_models(api: Api, alpha: FakeWorker) -> None:
    """When the only worker leaves, its models leave /models and chat says not found."""
    await alpha.disconnect()
    await eventually(lambda: not api.app.state.hub.connected())
    assert [m async for m in sdk(api).models.list()] == []
    with pytest.raises(openai.NotFoundError):
        await sdk(api).chat.completions.create(model="llama3.2", messages=HELLO)

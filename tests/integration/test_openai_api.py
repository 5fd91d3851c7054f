"""The OpenAI-compatible API end to end: real server, two real workers, two emulated Ollamas.

The official ``openai`` SDK talks to ``pendra server``; each ``pendra worker`` process discovers its
own emulator and serves it over /ws/gpu. The emulators record what reached "Ollama", so the tests
can check what Pendra sent (num_ctx) and what it aborted (cancellations).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from polling import eventually
from suite_env import WAIT
from cluster import PENDRA, Cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")


_clients: list[AsyncOpenAI] = []


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    for api in _clients:
        await api.close()


def client(cluster: Cluster, *, v1_root: bool = False, key: str | None = None) -> AsyncOpenAI:
    base = cluster.base_url + ("/v1" if v1_root else "/api/v1")
    api = AsyncOpenAI(base_url=base, api_key=key or cluster.api_key, max_retries=0,
                      timeout=30 * WAIT)
    _clients.append(api)
    return api


async def test_models_lists_what_workers_serve(cluster: Cluster) -> None:
    """GET /models lists the models of every connected worker; ?type filters by capability."""
    api = client(cluster)
    ids = {m.id async for m in api.models.list()}
    assert {"llama3.2:latest", "qwen3:8b", "nomic-embed-text:latest"} <= ids
    async with cluster.http() as http:
        embedding = (await http.get("/api/v1/models", params={"type": "embedding"})).json()
        assert [m["id"] for m in embedding["data"]] == ["nomic-embed-text:latest"]
        bad = await http.get("/api/v1/models", params={"type": "telepathy"})
        assert bad.status_code == 400


async def test_chat_non_stream_and_worker_headers(cluster: Cluster) -> None:
    """A non-streaming chat returns an OpenAI chat.completion, with request and worker headers."""
    api = client(cluster)
    raw = await api.chat.completions.with_raw_response.create(
        model="llama3.2:latest", messages=[{"role": "user", "content": "hello there"}])
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert raw.headers["x-request-id"]
    assert raw.headers["x-worker-id"] in cluster.worker_ids
    assert raw.headers["x-worker-name"] in cluster.worker_names


async def test_chat_stream_with_usage(cluster: Cluster) -> None:
    """Streaming relays chunks as they come, ends with a finish reason and the usage chunk."""
    api = client(cluster)
    stream = await api.chat.completions.create(
        model="llama3.2:latest", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "count [[tokens=12]]"}])
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert len(text.split()) == 12
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 12


async def test_chat_logprobs_both_ways(cluster: Cluster) -> None:
    """logprobs=True (with top_logprobs) reaches Ollama and every token's log probability comes
    back through the SDK, streamed (on each token's chunk) and whole."""
    api = client(cluster)
    reply = await api.chat.completions.create(
        model="llama3.2:latest", logprobs=True, top_logprobs=2,
        messages=[{"role": "user", "content": "count [[tokens=5]]"}])
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert len(content) == 5 and all(t.logprob <= 0 and len(t.top_logprobs) == 2
                                     for t in content)
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    stream = await api.chat.completions.create(
        model="llama3.2:latest", logprobs=True, stream=True,
        messages=[{"role": "user", "content": "count [[tokens=4]]"}])
    tokens = [t.token async for chunk in stream if chunk.choices and chunk.choices[0].logprobs
              for t in chunk.choices[0].logprobs.content or []]
    assert len(tokens) == 4


async def test_chat_tools_round_trip(cluster: Cluster) -> None:
    """Tools go out, a tool call comes back with JSON-string arguments and finish_reason tool_calls."""
    api = client(cluster)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    reply = await api.chat.completions.create(
        model="llama3.2:latest", tools=tools,
        messages=[{"role": "user", "content": "weather in Tokyo?"}])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test"}
    follow = await api.chat.completions.create(model="llama3.2:latest", tools=tools, messages=[
        {"role": "user", "content": "weather in Tokyo?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "11 degrees"}])
    assert follow.choices[0].finish_reason == "stop"


async def test_num_ctx_injected_for_chat_only(cluster: Cluster) -> None:
    """Chat reaches Ollama with num_ctx from discovery (the client's wins); embeddings without."""
    api = client(cluster)
    await cluster.clear_requests()
    await api.chat.completions.create(model="llama3.2:latest",
                                      messages=[{"role": "user", "content": "a"}])
    await api.chat.completions.create(model="llama3.2:latest",
                                      messages=[{"role": "user", "content": "b"}],
                                      extra_body={"options": {"num_ctx": 8192}})
    await api.embeddings.create(model="nomic-embed-text:latest", input=["x", "y"])
    chats = await cluster.recorded("/api/chat")
    assert sorted(r["body"]["options"]["num_ctx"] for r in chats) == [8192, 131072]
    embeds = await cluster.recorded("/api/embed")
    assert embeds and all("num_ctx" not in (r["body"].get("options") or {}) for r in embeds)


async def test_embeddings_keep_order(cluster: Cluster) -> None:
    """Embeddings come back in the OpenAI shape, one vector per input, in input order."""
    api = client(cluster)
    result = await api.embeddings.create(model="nomic-embed-text:latest",
                                         input=["first", "second", "third"])
    assert [d.index for d in result.data] == [0, 1, 2]
    assert len({len(d.embedding) for d in result.data}) == 1
    assert result.usage.prompt_tokens > 0
    single = await api.embeddings.create(model="nomic-embed-text:latest", input="first")
    assert single.data[0].embedding == result.data[0].embedding


async def test_images_on_an_ollama_that_has_them(cluster: Cluster) -> None:
    """Image generation works through a worker whose Ollama version has it (0.14.3–0.32.5)."""
    api = client(cluster)
    result = await api.images.generate(model="x/z-image-turbo:latest", prompt="a red square",
                                       size="32x32")
    import base64
    png = base64.b64decode(result.data[0].b64_json)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


async def test_n_images_are_served_and_url_answers_refused(cluster: Cluster) -> None:
    """n=3 gives three images (three generations on the worker, distinct seeds reached Ollama);
    response_format="url" is a 400 naming the field, never an answer in another format."""
    api = client(cluster)
    await cluster.clear_requests()
    result = await api.images.generate(model="x/z-image-turbo:latest", prompt="a red square",
                                       size="32x32", n=3, extra_body={"seed": 7})
    assert len(result.data) == 3 and all(image.b64_json for image in result.data)
    seeds = [r["body"]["options"]["seed"] for r in await cluster.recorded("/api/generate")]
    assert seeds[-3:] == [7, 8, 9]
    with pytest.raises(openai.BadRequestError) as refused:
        await api.images.generate(model="x/z-image-turbo:latest", prompt="a red square",
                                  response_format="url")
    assert refused.value.body["param"] == "response_format"  # type: ignore[index]


async def test_v1_root_alias(cluster: Cluster) -> None:
    """SDKs configured with the /v1 base URL reach the same API."""
    api = client(cluster, v1_root=True)
    reply = await api.chat.completions.create(model="llama3.2:latest",
                                              messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content


async def test_keys_absent_bad_and_revoked(cluster: Cluster) -> None:
    """No key, an unknown key and a revoked key are all 401; ``pendra keys create`` and ``revoke``
    go through the running control plane, so the new key works, and the revoked one is refused, on
    the very next request."""
    async with httpx.AsyncClient(base_url=cluster.base_url) as http:
        r = await http.get("/api/v1/models")
        assert r.status_code == 401 and r.headers["x-request-id"]
    with pytest.raises(openai.AuthenticationError):
        await client(cluster, key="pdr_sk_" + "x" * 43).models.list()
    key = cluster.create_key("short-lived")
    assert [m async for m in client(cluster, key=key).models.list()]
    cluster.cli("keys", "revoke", key[:12])
    with pytest.raises(openai.AuthenticationError):
        await client(cluster, key=key).models.list()
    async with httpx.AsyncClient(base_url=cluster.base_url, headers={"x-api-key": cluster.api_key}) as http:
        assert (await http.get("/api/v1/models")).status_code == 200


async def test_cli_key_changes_reach_the_running_server_through_the_store(cluster: Cluster) -> None:
    """When the CLI cannot reach the control plane (PENDRA_URL points at a closed port), ``pendra
    keys create`` and ``revoke`` write the store directly, and the running server still accepts the
    new key, then refuses it, once its key index has synced (within a second; the ceiling here is
    generous)."""
    env = {**cluster.server_env, "PENDRA_URL": "http://127.0.0.1:1"}

    def cli(*args: str) -> str:
        done = subprocess.run([PENDRA, *args], env=env, capture_output=True, text=True,
                              timeout=60 * WAIT, check=True)
        return done.stdout

    key = re.search(r"pdr_sk_[A-Za-z0-9_-]{43}", cli("keys", "create", "--name", "offline"))
    assert key is not None

    async def answers(expected: int) -> bool:
        async with httpx.AsyncClient(base_url=cluster.base_url,
                                     headers={"Authorization": f"Bearer {key.group(0)}"}) as http:
            return (await http.get("/api/v1/models")).status_code == expected

    await eventually(lambda: answers(200), timeout_s=5, what="the key made in the store works")
    cli("keys", "revoke", key.group(0)[:12])
    await eventually(lambda: answers(401), timeout_s=5, what="the key revoked in the store fails")


async def test_unknown_model_and_catalogue_model(cluster: Cluster) -> None:
    """An unknown model is 404; a catalogued one installed nowhere says so."""
    api = client(cluster)
    with pytest.raises(openai.NotFoundError, match="not found"):
        await api.chat.completions.create(model="no-such-model",
                                          messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="in the catalogue but no connected worker"):
        await api.chat.completions.create(model="gemma3:1b",
                                          messages=[{"role": "user", "content": "hi"}])


async def test_malformed_bodies_are_400(cluster: Cluster) -> None:
    """Broken JSON and missing fields get 400 with a message naming the problem."""
    async with cluster.http() as http:
        r = await http.post("/api/v1/chat/completions", content=b"{not json",
                            headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.headers["x-request-id"]
        r = await http.post("/api/v1/chat/completions", json={"model": "llama3.2:latest"})
        assert r.status_code == 400 and "messages" in r.text


async def test_client_disconnect_cancels_at_ollama(cluster: Cluster) -> None:
    """When the client goes away mid-stream, the worker aborts its Ollama call."""
    await cluster.reset_stats()
    async with cluster.http() as http:
        async with http.stream("POST", "/api/v1/chat/completions", json={
                "model": "llama3.2:latest", "stream": True,
                "messages": [{"role": "user", "content": "[[tokens=200]] [[delay=0.05]] go"}]}) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            got = 0
            async for line in lines:
                if line.startswith("data: "):
                    got += 1
                    if got == 3:
                        break
    async def cancelled_at_ollama() -> bool:
        return any(c["path"] == "/api/chat" for c in await cluster.cancelled())

    await eventually(cancelled_at_ollama, interval_s=0.1)


async def test_model_list_follows_ollama(cluster: Cluster) -> None:
    """A model added to one worker's Ollama shows up in /models within seconds, and leaves again."""
    api = client(cluster)
    emu = cluster.emulators[0]
    await emu.add_model({"name": "tinyllama:latest", "family": "llama", "parameter_size": "1.1B",
                         "quantization_level": "Q4_0", "context_length": 2048,
                         "capabilities": ["completion"], "size": 637700138, "format": "gguf"})
    await cluster.wait_for_models(lambda ids: "tinyllama:latest" in ids)
    await emu.remove_model("tinyllama:latest")
    await cluster.wait_for_models(lambda ids: "tinyllama:latest" not in ids)
    assert "llama3.2:latest" in {m.id async for m in api.models.list()}


async def test_cli_sees_the_live_fleet_and_usage(cluster: Cluster) -> None:
    """`pendra status`, `workers list` and `usage` report the fleet and per-request usage rows."""
    await client(cluster).chat.completions.create(
        model="llama3.2:latest", messages=[{"role": "user", "content": "count [[tokens=7]]"}])
    status = json.loads(cluster.cli("status", "--json").stdout)
    assert {w["name"] for w in status["workers"]} == {"alpha", "beta"}
    assert "llama3.2:latest" in status["models"]
    workers = json.loads(cluster.cli("workers", "list", "--json").stdout)
    assert all(w["connected"] and w["load"].endswith("/1") for w in workers)
    def recorded() -> dict[str, Any] | None:
        usage = json.loads(cluster.cli("usage", "--json").stdout)
        return usage if usage["totals"]["completion_tokens"] >= 7 else None

    usage = await eventually(recorded, interval_s=0.2)
    per_model = {row["model"]: row for row in usage["per_model"]}
    assert per_model["llama3.2:latest"]["requests"] >= 1
    assert {row["worker"] for row in usage["per_worker"]} <= {"alpha", "beta", None}


async def test_bad_requests_are_the_clients_400_and_leave_the_fleet_alone(cluster: Cluster) -> None:
    """Against real workers: a lone surrogate, a message nested 260 deep, and fields with the
    wrong type or range (stop: 5, stream_options: "x", tool_calls: ["x"], temperature "hot",
    max_tokens -5, options.num_ctx -1) are 400 invalid_request_error naming the field — the SDK
    raises BadRequestError with ``param`` — and reach no Ollama; streams already running on both
    workers finish with [DONE], and both workers stay connected."""
    api = client(cluster)
    await cluster.clear_requests()
    hello = [{"role": "user", "content": "[[tokens=30]] [[delay=0.02]] go"}]

    async def stream() -> str:
        async with cluster.http() as http:
            response = await http.post("/api/v1/chat/completions", json={
                "model": "llama3.2:latest", "messages": hello, "stream": True})
        return response.text

    streams = [asyncio.create_task(stream()) for _ in range(2)]
    deep: object = "x"
    for _ in range(260):
        deep = [deep]
    async with cluster.http() as http:
        surrogate = await http.post("/api/v1/chat/completions", content=(
            b'{"model": "llama3.2:latest", "messages": [{"role": "user", "content": "\\ud800"}]}'),
            headers={"content-type": "application/json"})
        nested = await http.post("/api/v1/chat/completions", json={
            "model": "llama3.2:latest", "messages": [{"role": "user", "content": "x"}],
            "metadata": {"deep": deep}})
    for response, param in ((surrogate, "messages[0].content"), (nested, "metadata")):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    cases: list[tuple[dict[str, object], str]] = [
        ({"stop": 5}, "stop"), ({"stream_options": "x"}, "stream_options"),
        ({"messages": [{"role": "assistant", "tool_calls": ["x"]}]}, "messages[0].tool_calls[0]"),
        ({"temperature": "hot"}, "temperature"), ({"max_tokens": -5}, "max_tokens"),
        ({"extra_body": {"options": {"num_ctx": -1}}}, "options.num_ctx")]
    for fields, param in cases:
        kwargs: dict[str, object] = {"model": "llama3.2:latest",
                                     "messages": [{"role": "user", "content": "x"}]} | fields
        with pytest.raises(openai.BadRequestError) as caught:
            await api.chat.completions.create(**kwargs)  # type: ignore[call-overload]
        assert caught.value.param == param, caught.value.body
        assert caught.value.type == "invalid_request_error"
    for text in await asyncio.gather(*streams):
        assert text.rstrip().endswith("data: [DONE]"), text[-300:]
    assert len(await cluster.recorded("/api/chat")) == 2  # only the two streams reached Ollama
    async with cluster.http() as http:
        status = (await http.get("/api/v1/status")).json()
    assert {w["name"] for w in status["workers"]} == cluster.worker_names


async def test_requests_a_model_cannot_serve_are_refused_by_pendra(cluster: Cluster) -> None:
    """Chat on an embedding model is 400 naming the model, not forwarded to Ollama; the image
    model is listed as type=image only because alpha's Ollama generates images, and image
    requests only ever go to alpha (beta's Ollama has no image generation)."""
    api = client(cluster)
    await cluster.clear_requests()
    with pytest.raises(openai.BadRequestError, match="nomic-embed-text:latest") as caught:
        await api.chat.completions.create(model="nomic-embed-text:latest",
                                          messages=[{"role": "user", "content": "hi"}])
    assert caught.value.param == "model"
    assert await cluster.recorded("/api/chat") == []
    for _ in range(3):
        raw = await api.images.with_raw_response.generate(model="x/z-image-turbo:latest",
                                                          prompt="a red square", size="16x16")
        assert raw.headers["x-worker-name"] == "alpha"
    async with cluster.http() as http:
        images = (await http.get("/api/v1/models", params={"type": "image"})).json()["data"]
        status = (await http.get("/api/v1/status")).json()
    assert [m["id"] for m in images] == ["x/z-image-turbo:latest"]
    by_name = {w["name"]: w for w in status["workers"]}
    assert "image" not in by_name["beta"]["backends"][0]["capabilities"]


async def test_cli_key_limits_apply_on_the_next_request(cluster: Cluster) -> None:
    """``pendra keys create --rpm … --models …`` and ``keys update`` go through the running control
    plane: the limits hold on the next request (429 with Retry-After, 403 outside the allow-list),
    ``keys list --json`` shows them, and an out-of-range value is refused with its range."""
    out = cluster.cli("keys", "create", "--name", "limited", "--rpm", "2",
                      "--models", "llama3.*").stdout
    assert "Limits: 2 rpm; models llama3.*" in out
    raw = re.search(r"pdr_sk_[A-Za-z0-9_-]{43}", out)
    assert raw is not None
    api = client(cluster, key=raw.group(0))
    messages: Any = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        await api.chat.completions.create(model="llama3.2:latest", messages=messages)
    with pytest.raises(openai.RateLimitError) as limited:
        await api.chat.completions.create(model="llama3.2:latest", messages=messages)
    assert int(limited.value.response.headers["retry-after"]) >= 1
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'qwen3:8b'"):
        await api.chat.completions.create(model="qwen3:8b", messages=messages)
    listed = json.loads(cluster.cli("keys", "list", "--json").stdout)
    key_id = next(k["id"] for k in listed if k["name"] == "limited")
    assert next(k for k in listed if k["id"] == key_id)["limits"]["rpm"] == 2
    updated = cluster.cli("keys", "update", key_id, "--rpm", "0", "--models", "").stdout
    assert "Limits: none" in updated
    await api.chat.completions.create(model="qwen3:8b", messages=messages)
    refused = cluster.cli("keys", "update", key_id, "--max-concurrent", "-3", check=False)
    assert refused.returncode == 1
    assert "max_concurrent must be between 0 and 100,000" in refused.stdout + refused.stderr

"""The Anthropic routes on a real control plane with fake workers: every error on these paths in
Anthropic's envelope (validation, auth, routing, body limit, capacity), the internal body a
worker receives, the usage row's kind, and OpenAI's own paths left as they were."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import AsyncAnthropic

from api_fixtures import TIMEOUT_S, Api, FakeWorker, fleet, hold, running_api
from pendra.server.store import usage as usage_store

HELLO = {"model": "llama3.2:latest", "max_tokens": 20,
         "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, queue_timeout_s=0.3, max_body_bytes=64 * 1024) as running:
        yield running


def http(api: Api, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S, headers=headers)


def sdk(api: Api) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=api.base_url, api_key=api.key, max_retries=0,
                          timeout=TIMEOUT_S)


def anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert body["request_id"] == response.headers["x-request-id"]
    assert set(body) == {"type", "error", "request_id"}
    message: str = body["error"]["message"]
    return message


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
async def test_errors_before_any_worker_in_anthropics_envelope(api: Api, prefix: str) -> None:
    """Auth, validation, JSON, route, method and body-size errors on both prefixes are Anthropic's
    envelope with Anthropic's types and the request id; the message names the field."""
    async with http(api) as client:
        path = f"{prefix}/messages"
        anthropic_error(await client.post(path, json=HELLO), 401, "authentication_error")
        key = {"x-api-key": api.key, "anthropic-version": "2023-06-01"}
        text = anthropic_error(await client.post(path, headers=key, json={**HELLO, "top_k": -2}),
                               400, "invalid_request_error")
        assert "top_k" in text
        text = anthropic_error(await client.post(path, headers=key, json={
            **HELLO, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "x", "content": 5}]}]}),
            400, "invalid_request_error")
        assert "messages[0].content[0].content" in text
        text = anthropic_error(await client.post(path, headers=key, json={
            k: v for k, v in HELLO.items() if k != "max_tokens"}), 400, "invalid_request_error")
        assert "max_tokens" in text
        anthropic_error(await client.post(path, headers=key | {"content-type": "application/json"},
                                          content=b"{nope"), 400, "invalid_request_error")
        anthropic_error(await client.get(path, headers=key), 405, "invalid_request_error")
        anthropic_error(await client.post(f"{path}/nothing", headers=key, json=HELLO), 404,
                        "not_found_error")
        big = {**HELLO, "messages": [{"role": "user", "content": "x" * 100_000}]}
        anthropic_error(await client.post(path, headers=key, json=big), 413, "request_too_large")
        anthropic_error(await client.post(f"{path}/count_tokens", headers=key, json={
            "model": "llama3.2:latest", "messages": []}), 400, "invalid_request_error")


async def test_openai_paths_keep_openais_envelope(api: Api) -> None:
    """The Anthropic shape is for its own paths only."""
    async with http(api) as client:
        r = await client.post("/v1/chat/completions", json={})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert "type" not in r.json()


async def test_unknown_model_is_not_found(api: Api, alpha: FakeWorker) -> None:
    async with http(api, **{"x-api-key": api.key}) as client:
        text = anthropic_error(await client.post("/v1/messages", json={**HELLO, "model": "nope"}),
                               404, "not_found_error")
        assert "nope" in text


async def test_worker_gets_the_internal_chat_and_usage_is_kind_messages(
        api: Api, alpha: FakeWorker) -> None:
    """The worker receives the internal chat body (never Anthropic's shapes); the answer is an
    Anthropic message; the usage row is of kind messages (count_tokens of its own kind)."""
    client = sdk(api)
    try:
        reply = await client.messages.create(
            model="llama3.2:latest", max_tokens=20, system="sys", stop_sequences=["END"],
            tools=[{"name": "f", "input_schema": {"type": "object"}}],
            messages=[{"role": "user", "content": "hi"}])
        assert reply.content[0].text == "hello from alpha"  # type: ignore[union-attr]
        assert reply._request_id and reply._request_id.startswith("req_")
        assert reply.usage.input_tokens == 7 and reply.usage.output_tokens == 3
        request = alpha.requests[-1]
        assert request.kind == "chat"
        assert request.body == {
            "model": "llama3.2:latest", "stream": False, "max_tokens": 20,
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f",
                                                        "parameters": {"type": "object"}}}],
            "options": {"stop": ["END"]}}
        counted = await client.messages.count_tokens(
            model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}])
        assert counted.input_tokens == 7
    finally:
        await client.close()
    await api.app.state.usage.flush()
    async with api.app.state.store.session() as session:
        rows = await usage_store.recent_usage(session, 10)
    assert sorted(r.kind for r in rows) == ["count_tokens", "messages"]


async def test_stream_through_the_relay(api: Api, alpha: FakeWorker) -> None:
    """A streamed answer through the relay is Anthropic's event stream with X-Request-Id."""
    client = sdk(api)
    try:
        async with client.messages.stream(model="llama3.2:latest", max_tokens=20,
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
            headers = stream.response.headers
            assert headers["x-request-id"] and headers["request-id"] == headers["x-request-id"]
        assert text == "one two three" and final.stop_reason == "end_turn"
        assert final.usage.input_tokens == 7 and final.usage.output_tokens == 3
    finally:
        await client.close()


async def test_busy_fleet_is_529_overloaded_with_retry_after(api: Api) -> None:
    """Every worker busy past the queue wait: 529 overloaded_error, as Anthropic says it, with
    Retry-After (the SDK's OverloadedError, which it retries)."""
    release = asyncio.Event()
    async with fleet(api, FakeWorker("busy", script=hold(release))) as (worker,):
        client = sdk(api)
        try:
            first = asyncio.create_task(client.messages.create(**HELLO))  # type: ignore[arg-type]
            await worker.wait_for(lambda: len(worker.requests) == 1)
            with pytest.raises(anthropic.OverloadedError) as busy:
                await client.messages.create(**HELLO)  # type: ignore[arg-type]
            assert busy.value.status_code == 529
            assert busy.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
            assert int(busy.value.response.headers["retry-after"]) >= 1
            release.set()
            assert (await first).type == "message"
        finally:
            release.set()
            await client.close()

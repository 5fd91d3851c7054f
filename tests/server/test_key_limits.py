"""Per-key limits through a real control plane, a real (fake) worker and the official openai SDK.

Each limit is hit exactly at its threshold, under parallel load where that is the risk; a refused
request is 429 (403 for a model outside the allow-list) in OpenAI's shape, with Retry-After and
the x-ratelimit headers; a successful one carries the remaining-quota headers; changes through
the admin API apply on the next request; the monthly quota survives a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from api_fixtures import (ADMIN_TOKEN, CHAT_MODEL, EMBED_MODEL, USAGE, Api, FakeWorker, fleet,
                          hold, running_api)

TOKENS = USAGE["prompt_tokens"] + USAGE["completion_tokens"]  # what each fake answer uses


@pytest.fixture
async def wide(api: Api) -> AsyncIterator[FakeWorker]:
    """A worker with room for every parallel request, so only the key's limits refuse."""
    async with fleet(api, FakeWorker("wide", max_concurrent=64)) as (worker,):
        yield worker


async def admin(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        response = await http.post(f"/api/v1{path}", json=body,
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code < 300, response.text
    answer: dict[str, Any] = response.json()
    return answer


_OPEN: list[openai.AsyncOpenAI] = []


def sdk(api: Api, key: str) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0)
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().close()


async def chat(client: openai.AsyncOpenAI, model: str = CHAT_MODEL.id) -> Any:
    """The raw response of one chat, or the SDK's error for it."""
    try:
        return await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError as exc:
        return exc


async def test_requests_per_minute_hold_under_parallel_load(api: Api, wide: FakeWorker) -> None:
    made = await admin(api, "/keys", {"name": "ten a minute", "rpm": 10})
    assert made["limits"]["rpm"] == 10
    client = sdk(api, made["key"])
    results = await asyncio.gather(*(chat(client) for _ in range(20)))
    passed = [r for r in results if not isinstance(r, openai.APIStatusError)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(passed) == 10 and len(refused) == 10
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in passed)
    assert remaining == list(range(10))
    assert all(r.headers["x-ratelimit-limit-requests"] == "10" for r in passed)
    error = refused[0]
    assert error.status_code == 429
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.response.headers["x-request-id"]
    body = error.response.json()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
    assert "10 requests per minute" in body["message"] and "'ten a minute'" in body["message"]


async def test_concurrency_limit_counts_requests_in_flight(api: Api) -> None:
    release = asyncio.Event()
    async with fleet(api, FakeWorker("slow", max_concurrent=64, script=hold(release))) as (slow,):
        made = await admin(api, "/keys", {"name": "three at a time", "max_concurrent": 3})
        client = sdk(api, made["key"])
        held = [asyncio.create_task(chat(client)) for _ in range(3)]
        await slow.wait_for(lambda: len(slow.requests) == 3)
        extra = await asyncio.gather(*(chat(client) for _ in range(5)))
        assert all(isinstance(r, openai.RateLimitError) for r in extra)
        assert "3 requests at a time" in extra[0].message
        release.set()
        assert all(not isinstance(r, openai.APIStatusError) for r in await asyncio.gather(*held))
        again = await chat(client)  # the slots came back
        assert not isinstance(again, openai.APIStatusError)


async def test_tokens_per_minute_refuse_once_the_budget_is_spent(api: Api,
                                                                 wide: FakeWorker) -> None:
    made = await admin(api, "/keys", {"name": "tokens", "tpm": 3 * TOKENS})
    client = sdk(api, made["key"])
    seen = []
    for _ in range(3):
        response = await chat(client)
        seen.append(response.headers["x-ratelimit-remaining-tokens"])
    assert seen == [str(3 * TOKENS), str(2 * TOKENS), str(TOKENS)]  # before each one's own use
    refused = await chat(client)
    assert isinstance(refused, openai.RateLimitError)
    assert f"{3 * TOKENS} tokens per minute" in refused.message


async def test_allow_list_refuses_other_models_with_403(api: Api, wide: FakeWorker) -> None:
    made = await admin(api, "/keys", {"name": "llama only", "models": ["llama3.*"]})
    client = sdk(api, made["key"])
    assert not isinstance(await chat(client, CHAT_MODEL.id), openai.APIStatusError)
    try:
        await client.embeddings.create(model=EMBED_MODEL.id, input="x")
    except openai.PermissionDeniedError as exc:
        body = exc.response.json()["error"]
        assert body["type"] == "permission_error" and body["param"] == "model"
        assert f"may not use model '{EMBED_MODEL.id}'" in body["message"]
    else:
        raise AssertionError("a model outside the allow-list was served")
    assert not any(r.model == EMBED_MODEL.id for r in wide.requests)  # never routed


async def test_changed_limits_apply_on_the_next_request(api: Api, wide: FakeWorker) -> None:
    made = await admin(api, "/keys", {"name": "changing"})
    client = sdk(api, made["key"])
    first = await chat(client)
    assert "x-ratelimit-limit-requests" not in first.headers  # no limit, no headers
    changed = await admin(api, "/keys/update", {"key": made["id"], "rpm": 1})
    assert changed["limits"]["rpm"] == 1
    assert (await chat(client)).headers["x-ratelimit-limit-requests"] == "1"
    assert isinstance(await chat(client), openai.RateLimitError)
    await admin(api, "/keys/update", {"key": made["id"], "rpm": 0})  # 0: no limit again
    assert not isinstance(await chat(client), openai.APIStatusError)


async def test_admin_api_refuses_limits_out_of_range(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.base_url) as http:
        response = await http.post("/api/v1/keys", json={"name": "bad", "rpm": -1},
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "rpm"
        response = await http.post("/api/v1/keys", json={"name": "bad", "models": ["a b"]},
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 400 and response.json()["error"]["param"] == "models"


async def test_defaults_apply_to_keys_without_their_own(tmp_path: Path) -> None:
    async with running_api(tmp_path, key_defaults={"rpm": 1}) as api:
        async with fleet(api, FakeWorker("w", max_concurrent=8)):
            plain = await admin(api, "/keys", {"name": "plain"})
            free = await admin(api, "/keys", {"name": "free", "rpm": 0})
            assert not isinstance(await chat(sdk(api, plain["key"])), openai.APIStatusError)
            assert isinstance(await chat(sdk(api, plain["key"])), openai.RateLimitError)
            for _ in range(3):
                assert not isinstance(await chat(sdk(api, free["key"])), openai.APIStatusError)


async def test_monthly_quota_survives_a_restart(tmp_path: Path) -> None:
    async with running_api(tmp_path) as api:
        async with fleet(api, FakeWorker("w", max_concurrent=8)):
            made = await admin(api, "/keys", {"name": "monthly", "monthly_tokens": 2 * TOKENS})
            client = sdk(api, made["key"])
            first = await chat(client)
            assert first.headers["x-pendra-quota-remaining-tokens"] == str(2 * TOKENS)
            await chat(client)
            refused = await chat(client)
            assert isinstance(refused, openai.RateLimitError)
            assert refused.response.json()["error"]["code"] == "insufficient_quota"
    async with running_api(tmp_path) as api:  # the same store: the usage rows are read back
        async with fleet(api, FakeWorker("w2", max_concurrent=8)):
            after = await chat(sdk(api, made["key"]))
            assert isinstance(after, openai.RateLimitError)
            assert "monthly quota" in after.message


async def test_anthropic_clients_get_their_own_429_and_403(api: Api, wide: FakeWorker) -> None:
    """The same limits on /v1/messages answer in Anthropic's error shape, which the official
    anthropic SDK raises as RateLimitError and PermissionDeniedError."""
    made = await admin(api, "/keys", {"name": "claude", "rpm": 1, "models": ["llama3.*"]})
    client = anthropic.AsyncAnthropic(base_url=api.base_url, api_key=made["key"], max_retries=0)
    try:
        message = await client.messages.create(model=CHAT_MODEL.id, max_tokens=16,
                                               messages=[{"role": "user", "content": "hi"}])
        assert message.content
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(model=CHAT_MODEL.id, max_tokens=16,
                                         messages=[{"role": "user", "content": "hi"}])
        body = limited.value.response.json()
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert int(limited.value.response.headers["retry-after"]) >= 1
        assert limited.value.response.headers["x-ratelimit-limit-requests"] == "1"
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            await client.messages.create(model=EMBED_MODEL.id, max_tokens=16,
                                         messages=[{"role": "user", "content": "hi"}])
        assert refused.value.response.json()["error"]["type"] == "permission_error"
    finally:
        await client.close()

"""Anthropic's Messages API end to end: the official ``anthropic`` SDK, unmodified, against a real
``pendra server`` and a real ``pendra worker`` serving an emulated Ollama.

The emulator records what reached "Ollama", so each test also checks what Pendra sent: num_ctx
injected from discovery, Anthropic's fields mapped to Ollama's options, tools, images, think.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import pytest_asyncio
from anthropic import AsyncAnthropic

from cluster import Cluster, start_cluster
from polling import eventually
from suite_env import WAIT

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "llama3.2:latest"  # tools; context length 131072 (the num_ctx Pendra injects)
NUM_CTX = 131072
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000185d72ea80000000049454e44ae426082")).decode()
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """One server and one worker (one request at a time, so its capacity can be used up).

    The worker keeps the default heartbeat timeout: with the suite's 2 s, a worker streaming one
    answer for more than a few seconds on a loaded machine was seen to drop its link ("nothing
    heard for 4.6s"), OpenAI chat streams included; that is the link's matter, not this dialect's.
    """
    root: Path = tmp_path_factory.mktemp("anthropic")
    async with start_cluster(root, workers=("alpha",),
                             worker_env={"HEARTBEAT_TIMEOUT": "15"}) as running:
        yield running


_clients: list[AsyncAnthropic] = []


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    for api in _clients:
        await api.close()


def client(cluster: Cluster, *, key: str | None = None, bearer: bool = False,
           base: str = "") -> AsyncAnthropic:
    """The SDK as a user configures it: base URL = the server's root (it appends /v1/messages)."""
    kwargs: dict[str, Any] = {"auth_token": key or cluster.api_key} if bearer else {
        "api_key": key or cluster.api_key}
    api = AsyncAnthropic(base_url=cluster.base_url + base, max_retries=0, timeout=30 * WAIT,
                         **kwargs)
    _clients.append(api)
    return api


async def last_chat(cluster: Cluster) -> dict[str, Any]:
    chats = await cluster.recorded("/api/chat")
    assert chats, "nothing reached Ollama"
    body: dict[str, Any] = chats[-1]["body"]
    return body


async def test_message_whole_and_what_reached_ollama(cluster: Cluster) -> None:
    """A non-streaming message comes back in Anthropic's envelope, with the model as named, real
    token counts and request/worker headers; Ollama got num_ctx and every mapped option."""
    api = client(cluster)
    await cluster.clear_requests()
    raw = await api.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, system="You are terse.",
        messages=[{"role": "user", "content": "hello there"}],
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 20},
        extra_headers={"anthropic-beta": "some-beta-2025-01-01"})
    reply = await raw.parse()
    assert reply.type == "message" and reply.role == "assistant" and reply.model == MODEL
    assert reply.id.startswith("msg_")
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].text == "Echo: hello there"  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens == 3
    assert raw.headers["x-request-id"] and raw.headers["x-worker-name"] == "alpha"
    sent = await last_chat(cluster)
    assert sent["model"] == MODEL and sent["stream"] is True
    assert sent["messages"] == [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "hello there"}]
    assert sent["options"] == {"num_ctx": NUM_CTX, "num_predict": 64, "temperature": 0.3,
                               "top_p": 0.9, "top_k": 20}
    assert "tools" not in sent and "think" not in sent


async def test_bearer_and_api_prefix(cluster: Cluster) -> None:
    """ANTHROPIC_AUTH_TOKEN-style Bearer auth works, and so does the /api/v1 alias."""
    reply = await client(cluster, bearer=True).messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert reply.content[0].text.startswith("Echo:")  # type: ignore[union-attr]
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30 * WAIT) as http:
        r = await http.post("/api/v1/messages", headers={"x-api-key": cluster.api_key,
                                                         "anthropic-version": "2023-06-01"},
                            json={"model": MODEL, "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["type"] == "message"


async def test_stream_helper_and_event_sequence(cluster: Cluster) -> None:
    """``messages.stream`` yields text as it comes and a final message with real usage; the raw
    SSE is Anthropic's event sequence with its event names."""
    api = client(cluster)
    async with api.messages.stream(model=MODEL, max_tokens=64, messages=[
            {"role": "user", "content": "count [[tokens=12]]"}]) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert len(text.split()) == 12 and final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 12
    assert final.usage.input_tokens > 0
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30 * WAIT) as http:
        async with http.stream("POST", "/v1/messages", headers={"x-api-key": cluster.api_key},
                               json={"model": MODEL, "max_tokens": 8, "stream": True,
                                     "messages": [{"role": "user", "content": "a b c"}]}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            body = "".join([chunk async for chunk in r.aiter_text()])
    events = [block.split("\n")[0].removeprefix("event: ")
              for block in body.strip().split("\n\n")]
    assert events[:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    for block in body.strip().split("\n\n"):
        name, data = block.split("\n", 1)
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")


async def test_stream_true_raw_events(cluster: Cluster) -> None:
    """``stream=True`` gives the SDK's typed events, ending in message_delta and message_stop."""
    api = client(cluster)
    stream = await api.messages.create(model=MODEL, max_tokens=5, stream=True,
                                       messages=[{"role": "user", "content": "[[tokens=9]] go"}])
    kinds, deltas, stop = [], [], None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            deltas.append(event.delta.text)
        if event.type == "message_delta":
            stop = event.delta.stop_reason
            assert event.usage.output_tokens == 5 and (event.usage.input_tokens or 0) > 0
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert len("".join(deltas).split()) == 5
    assert stop == "max_tokens"


async def test_max_tokens_reached(cluster: Cluster) -> None:
    """max_tokens reaches Ollama as num_predict, and a capped answer says max_tokens."""
    api = client(cluster)
    await cluster.clear_requests()
    reply = await api.messages.create(model=MODEL, max_tokens=3,
                                      messages=[{"role": "user", "content": "[[tokens=10]] go"}])
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 3
    assert (await last_chat(cluster))["options"]["num_predict"] == 3


async def test_stop_sequences(cluster: Cluster) -> None:
    """stop_sequences reach Ollama as options.stop (more than OpenAI's four allowed) and the text
    ends where the sequence began. Ollama does not say that a sequence matched (or which), so the
    answer honestly says end_turn with no stop_sequence."""
    api = client(cluster)
    await cluster.clear_requests()
    stops = ["alpha", "beta", "gamma", "delta", "omega"]
    reply = await api.messages.create(model=MODEL, max_tokens=50, stop_sequences=stops,
                                      messages=[{"role": "user", "content": "one two omega three"}])
    assert reply.content[0].text == "Echo: one two"  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert (await last_chat(cluster))["options"]["stop"] == stops


async def test_tools_round_trip(cluster: Cluster) -> None:
    """A tool_use comes back with a toolu_ id and parsed input; the tool_result (and an error
    result) go back to Ollama as tool messages naming the call; the model then answers."""
    api = client(cluster)
    await cluster.clear_requests()
    question = {"role": "user", "content": "weather in Tokyo?"}
    first = await api.messages.create(model=MODEL, max_tokens=100, tools=[WEATHER],
                                      tool_choice={"type": "auto"}, messages=[question])
    assert first.stop_reason == "tool_use"
    use = first.content[-1]
    assert use.type == "tool_use" and use.id.startswith("toolu_") and use.name == "get_weather"
    assert use.input == {"city": "test"}
    sent = await last_chat(cluster)
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": WEATHER["input_schema"]}}]
    follow = await api.messages.create(model=MODEL, max_tokens=100, tools=[WEATHER], messages=[
        question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id,
             "content": [{"type": "text", "text": "11 degrees"}]},
            {"type": "tool_result", "tool_use_id": use.id, "content": "timeout",
             "is_error": True}]}])
    assert follow.stop_reason == "end_turn" and follow.content[0].type == "text"
    sent = await last_chat(cluster)
    assert sent["messages"][1]["tool_calls"] == [
        {"id": use.id, "function": {"name": "get_weather", "arguments": {"city": "test"}}}]
    assert sent["messages"][2:] == [
        {"role": "tool", "content": "11 degrees", "tool_name": "get_weather",
         "tool_call_id": use.id},
        {"role": "tool", "content": "Error: timeout", "tool_name": "get_weather",
         "tool_call_id": use.id}]


async def test_tools_streamed_and_tool_choice(cluster: Cluster) -> None:
    """A streamed tool call is a tool_use block with input_json_delta; tool_choice none offers
    Ollama no tools, and a named tool only that one."""
    api = client(cluster)
    async with api.messages.stream(model=MODEL, max_tokens=100, tools=[WEATHER],
                                   messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[-1].type == "tool_use" and final.content[-1].input == {"city": "test"}
    other = {**WEATHER, "name": "get_time"}
    await cluster.clear_requests()
    none = await api.messages.create(model=MODEL, max_tokens=20, tools=[WEATHER, other],
                                     tool_choice={"type": "none"},
                                     messages=[{"role": "user", "content": "hi"}])
    assert none.stop_reason == "end_turn" and "tools" not in await last_chat(cluster)
    await api.messages.create(model=MODEL, max_tokens=20, tools=[WEATHER, other],
                              tool_choice={"type": "tool", "name": "get_time",
                                           "disable_parallel_tool_use": True},
                              messages=[{"role": "user", "content": "hi"}])
    assert [t["function"]["name"] for t in (await last_chat(cluster))["tools"]] == ["get_time"]


async def test_json_output(cluster: Cluster) -> None:
    """output_config.format reaches Ollama as its format schema, and the text is that JSON."""
    api = client(cluster)
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"]}
    await cluster.clear_requests()
    reply = await api.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "a city"}],
        output_config={"format": {"type": "json_schema", "schema": schema}})
    assert set(json.loads(reply.content[0].text)) == {"city"}  # type: ignore[union-attr]
    assert (await last_chat(cluster))["format"] == schema


async def test_image_in(cluster: Cluster) -> None:
    """A base64 image block reaches a vision model as one of the message's images."""
    api = client(cluster)
    await cluster.clear_requests()
    reply = await api.messages.create(model="llava:7b", max_tokens=30, messages=[
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}},
            {"type": "text", "text": "what is this?"}]}])
    assert "[images=1]" in reply.content[0].text  # type: ignore[union-attr]
    sent = await last_chat(cluster)
    assert sent["messages"] == [{"role": "user", "content": "what is this?", "images": [PNG]}]


async def test_thinking_whole_and_streamed(cluster: Cluster) -> None:
    """thinking enabled reaches Ollama as think: true; the thinking comes back as a thinking block
    (first, with a signature field), streamed as thinking_delta; disabled sends think: false."""
    api = client(cluster)
    await cluster.clear_requests()
    reply = await api.messages.create(
        model="qwen3:8b", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "why?"}])
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].thinking.startswith("Let me think")  # type: ignore[union-attr]
    assert reply.content[0].signature == ""  # type: ignore[union-attr]
    assert (await last_chat(cluster))["think"] is True
    async with api.messages.stream(
            model="qwen3:8b", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "why?"},
                      {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
                      {"role": "user", "content": "and?"}]) as stream:
        kinds = [e.delta.type async for e in stream
                 if e.type == "content_block_delta"]
        final = await stream.get_final_message()
    assert "thinking_delta" in kinds and "text_delta" in kinds
    assert [b.type for b in final.content] == ["thinking", "text"]
    sent = await last_chat(cluster)
    assert sent["messages"][1]["thinking"] == reply.content[0].thinking  # type: ignore[union-attr]
    await api.messages.create(model="qwen3:8b", max_tokens=50, thinking={"type": "disabled"},
                              messages=[{"role": "user", "content": "quick"}])
    assert (await last_chat(cluster))["think"] is False


async def test_count_tokens_asks_the_model(cluster: Cluster) -> None:
    """count_tokens is the prompt's length as Ollama evaluated it (num_predict 1: one token
    generated, on every Ollama version), the same count a message with that prompt reports."""
    api = client(cluster)
    messages = [{"role": "user", "content": "one two three four five"}]
    await cluster.clear_requests()
    counted = await api.messages.count_tokens(model=MODEL, system="be brief", messages=messages)
    sent = await last_chat(cluster)
    assert sent["options"]["num_predict"] == 1 and sent["options"]["num_ctx"] == NUM_CTX
    reply = await api.messages.create(model=MODEL, max_tokens=10, system="be brief",
                                      messages=messages)
    assert counted.input_tokens == reply.usage.input_tokens > 0


async def test_errors_take_the_sdk_exception_types(cluster: Cluster) -> None:
    """Bad bodies are 400 BadRequestError naming the field; bad keys 401; an unknown model 404;
    every body in Anthropic's envelope with the request id."""
    api = client(cluster)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await api.messages.create(model=MODEL, max_tokens=0,
                                  messages=[{"role": "user", "content": "x"}])
    assert bad.value.body["type"] == "error"  # type: ignore[index]
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in bad.value.body["error"]["message"]  # type: ignore[index]
    request_id = bad.value.response.headers["x-request-id"]
    assert bad.value.body["request_id"] == request_id  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as extra:
        await api.messages.create(model=MODEL, max_tokens=5, extra_body={"frobnicate": 1},
                                  messages=[{"role": "user", "content": "x"}])
    assert "frobnicate" in extra.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as url_image:
        await api.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}])
    text = url_image.value.body["error"]["message"]  # type: ignore[index]
    assert "messages[0].content[0].source" in text
    with pytest.raises(anthropic.BadRequestError):
        await api.messages.create(model=MODEL, max_tokens=5, tools=[WEATHER],
                                  tool_choice={"type": "any"},
                                  messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError) as unauth:
        await client(cluster, key="pdr_sk_nope").messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert unauth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as missing:
        await api.messages.create(model="no-such-model:1b", max_tokens=5,
                                  messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


async def test_no_capacity_is_529_overloaded(cluster: Cluster) -> None:
    """With the only worker busy past the queue wait, the SDK gets OverloadedError (529,
    overloaded_error, Retry-After); the held stream is unaffected."""
    api = client(cluster)
    stream = await api.messages.create(
        model=MODEL, max_tokens=500, stream=True,
        messages=[{"role": "user", "content": "[[tokens=80]] [[delay=0.1]] hold"}])
    started = asyncio.Event()

    async def read() -> list[str]:
        kinds = []
        async for event in stream:
            kinds.append(event.type)
            started.set()
        return kinds

    reader = asyncio.create_task(read())
    await started.wait()
    with pytest.raises(anthropic.OverloadedError) as busy:
        await api.messages.create(model=MODEL, max_tokens=5,
                                  messages=[{"role": "user", "content": "x"}])
    assert busy.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert int(busy.value.response.headers["retry-after"]) >= 1
    assert (await reader)[-1] == "message_stop"


async def test_failure_mid_stream_is_an_error_event(cluster: Cluster) -> None:
    """When Ollama's runner dies mid-answer, the stream ends with Anthropic's error event (the
    SDK raises it) and no message_stop."""
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30 * WAIT) as http:
        async with http.stream("POST", "/v1/messages", headers={"x-api-key": cluster.api_key},
                               json={"model": MODEL, "max_tokens": 50, "stream": True,
                                     "messages": [{"role": "user",
                                                   "content": "[[error-after=3]] go"}]}) as r:
            body = "".join([chunk async for chunk in r.aiter_text()])
    last = body.strip().split("\n\n")[-1]
    name, data = last.split("\n", 1)
    assert name == "event: error" and "message_stop" not in body
    error = json.loads(data.removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "runner" in error["error"]["message"]
    api = client(cluster)
    with pytest.raises(anthropic.APIStatusError):
        async with api.messages.stream(model=MODEL, max_tokens=50, messages=[
                {"role": "user", "content": "[[error-after=2]] go"}]) as stream:
            async for _ in stream:
                pass


async def test_client_disconnect_cancels_at_ollama(cluster: Cluster) -> None:
    """A client that goes away mid-stream cancels the Ollama call."""
    await cluster.reset_stats()
    api = client(cluster)
    async with api.messages.stream(model=MODEL, max_tokens=500, messages=[
            {"role": "user", "content": "[[tokens=200]] [[delay=0.05]] go"}]) as stream:
        got = 0
        async for event in stream:
            got += event.type == "content_block_delta"
            if got == 3:
                break

    async def cancelled_at_ollama() -> bool:
        return any(c["path"] == "/api/chat" for c in await cluster.cancelled())

    await eventually(cancelled_at_ollama, interval_s=0.1)
    # The slot is free again: the next message is served at once.
    reply = await api.messages.create(model=MODEL, max_tokens=5,
                                      messages=[{"role": "user", "content": "after"}])
    assert reply.stop_reason in ("end_turn", "max_tokens")
    await asyncio.sleep(0)

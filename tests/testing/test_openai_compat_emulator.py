"""The OpenAI-compatible emulators' shapes, checked by independent clients: the official openai SDK
for the OpenAI surface, the lmstudio SDK's model-info types for LM Studio's REST model list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from lmstudio._sdk_models import EmbeddingModelInfo, LlmInfo
from openai import AsyncOpenAI

from pendra.testing.servers import EmulatorProcess, run_openai_compat
from polling import eventually

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(params=["vllm", "lmstudio", "llamacpp"])
async def emulator(request: pytest.FixtureRequest) -> AsyncIterator[EmulatorProcess]:
    async with run_openai_compat(request.param) as emu:
        yield emu


async def test_the_openai_sdk_reads_models_chat_streams_and_errors(
        emulator: EmulatorProcess) -> None:
    async with AsyncOpenAI(base_url=emulator.base_url + "/v1", api_key="x", max_retries=0) as api:
        models = (await api.models.list()).data
        chat_model = models[0].id
        reply = await api.chat.completions.create(
            model=chat_model, messages=[{"role": "user", "content": "hi [[tokens=3]]"}])
        assert reply.object == "chat.completion" and reply.choices[0].finish_reason == "stop"
        assert reply.usage is not None and reply.usage.completion_tokens == 3
        stream = await api.chat.completions.create(
            model=chat_model, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hi [[tokens=2]]"}])
        chunks = [c async for c in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert all(c.usage is None for c in chunks[:-1])
        tools = await api.chat.completions.create(
            model=chat_model, messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"n": {"type": "integer"}}}}}])
        assert json.loads(tools.choices[0].message.tool_calls[0].function.arguments) == {"n": 1}
        if emulator.child.args[4] == "llamacpp":  # llama-server ignores the name
            assert (await api.chat.completions.create(model="nope", messages=[
                {"role": "user", "content": "x"}])).choices
        else:
            with pytest.raises(openai.NotFoundError) as missing:
                await api.chat.completions.create(model="nope", messages=[
                    {"role": "user", "content": "x"}])
            assert "nope" in str(missing.value)
        with pytest.raises(openai.BadRequestError):
            await api.chat.completions.create(model=chat_model, messages=[])


async def test_vllm_model_cards_and_version() -> None:
    async with run_openai_compat("vllm") as emu:
        async with AsyncOpenAI(base_url=emu.base_url + "/v1", api_key="x", max_retries=0) as api:
            [card] = (await api.models.list()).data
        assert card.id == LLAMA and card.owned_by == "vllm"
        assert card.model_extra["max_model_len"] == 8192 and card.model_extra["root"] == LLAMA
        async with httpx.AsyncClient(base_url=emu.base_url) as http:
            assert (await http.get("/version")).json() == {"version": "0.11.0"}


async def test_lmstudio_rest_models_fit_the_sdk_types_and_embeddings_work() -> None:
    async with run_openai_compat("lmstudio") as emu:
        async with httpx.AsyncClient(base_url=emu.base_url) as http:
            listed = (await http.get("/api/v1/models")).json()["models"]
        for entry in listed:
            common = {"model_key": entry["key"], "display_name": entry["display_name"],
                      "format": entry["format"], "path": f"{entry['key']}/model.gguf",
                      "size_bytes": entry["size_bytes"],
                      "max_context_length": entry["max_context_length"],
                      "params_string": entry["params_string"]}
            if entry["type"] == "llm":
                info = LlmInfo.from_dict({"type": "llm", **common,
                                          "architecture": entry["architecture"],
                                          "vision": entry["capabilities"]["vision"],
                                          "trained_for_tool_use":
                                              entry["capabilities"]["trained_for_tool_use"]})
                assert info.max_context_length >= entry["loaded_instances"][0]["config"][
                    "context_length"]
            else:
                assert "capabilities" not in entry and "architecture" not in entry
                EmbeddingModelInfo.from_dict({"type": "embedding", **common})
        async with AsyncOpenAI(base_url=emu.base_url + "/v1", api_key="x", max_retries=0) as api:
            vectors = await api.embeddings.create(model="text-embedding-nomic-embed-text-v1.5",
                                                  input=["a", "b c"])
        assert [v.index for v in vectors.data] == [0, 1] and vectors.usage.prompt_tokens == 3


async def test_lmstudio_download_jobs_follow_the_documented_states() -> None:
    async with run_openai_compat("lmstudio") as emu:
        await emu.configure(download_bytes_per_s=1e9)
        async with httpx.AsyncClient(base_url=emu.base_url) as http:
            started = (await http.post("/api/v1/models/download",
                                       json={"model": "qwen/qwen3-4b"})).json()
            assert set(started) <= {"job_id", "status", "total_size_bytes", "started_at",
                                    "bytes_per_second", "estimated_completion", "completed_at"}
            async def finished() -> dict | None:
                job = (await http.get(
                    f"/api/v1/models/download/status/{started['job_id']}")).json()
                assert job["status"] in ("downloading", "completed"), job
                return job if job["status"] == "completed" else None

            status = await eventually(finished, what="the download to complete")
            assert status["downloaded_bytes"] == status["total_size_bytes"] == 2_500_000
            assert "completed_at" in status and "bytes_per_second" not in status
            again = await http.post("/api/v1/models/download", json={"model": "qwen/qwen3-4b"})
            assert again.json() == {"status": "already_downloaded"}
            refused = await http.post("/api/v1/models/download",
                                      json={"model": "qwen/qwen3-4b", "quantization": "Q8_0"})
            assert refused.status_code == 400

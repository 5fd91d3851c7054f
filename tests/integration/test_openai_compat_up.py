"""vLLM, LM Studio and a generic OpenAI-compatible server behind `pendra up`, driven with the
official openai SDK; `pendra backends` and `pendra models install --backend` on a worker host."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from cluster import FAST, PENDRA, Proc
from pendra.testing.servers import EmulatorProcess, run_emulator, run_openai_compat
from polling import eventually
from suite_env import WAIT

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
DEAD = "http://127.0.0.1:1"


@asynccontextmanager
async def pendra_up(home: Path, log: Path, **env: str) -> AsyncIterator[tuple[Proc, str, str]]:
    """`pendra up` with the given backends (no other probed); yields the process, its URL and an
    API key."""
    proc = Proc("up", [PENDRA, "up", "--port", "0"],
                {**os.environ, **FAST, "PENDRA_HOME": str(home), "OLLAMA_ENDPOINT": DEAD,
                 "LMSTUDIO_ENDPOINT": DEAD, "VLLM_ENDPOINT": DEAD, "WORKER_NAME": "box", **env},
                log)
    await proc.start()
    try:
        url = (await proc.wait_for_line(r"Pendra is running at (http://\S+)", 60)).group(1)
        key = (await proc.wait_for_line(r"API key:\s+(pdr_sk_\S+)", 10)).group(1)
        yield proc, url, key
    finally:
        await proc.stop()


async def listed(api: AsyncOpenAI, *ids: str) -> dict[str, object]:
    async def check() -> dict[str, object] | None:
        found = {m.id: m for m in (await api.models.list()).data}
        return found if all(i in found for i in ids) else None

    return await eventually(check, timeout_s=20, interval_s=0.1, what=f"models {ids}")


async def test_vllm_and_lmstudio_through_pendra_up_with_the_openai_sdk(tmp_path: Path) -> None:
    """Chat (whole, streamed with usage, tools, JSON mode) and embeddings reach vLLM and LM Studio
    unchanged except the model name; one id on both is served once per backend; vLLM going away
    withdraws its model and its return brings it back; usage is recorded for each."""
    shared = tmp_path / "vllm-models.json"
    shared.write_text(json.dumps([{"id": LLAMA, "task": "chat", "context": 8192},
                                  {"id": "qwen/qwen3-8b", "task": "chat", "context": 40960}]))
    async with run_openai_compat("vllm", models=str(shared)) as vllm, \
            run_openai_compat("lmstudio") as lms, \
            pendra_up(tmp_path / "home", tmp_path / "up.log", VLLM_ENDPOINT=vllm.base_url,
                      LMSTUDIO_ENDPOINT=lms.base_url) as (proc, url, key):
        async with AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as api:
            models = await listed(api, LLAMA, "qwen/qwen3-8b", "qwen/qwen3-8b@vllm",
                                  "text-embedding-nomic-embed-text-v1.5")
            assert models["qwen/qwen3-8b"].model_extra["pendra"]["backend"] == "lmstudio"
            assert models["qwen/qwen3-8b@vllm"].model_extra["pendra"]["backend"] == "vllm"
            assert models[LLAMA].model_extra["pendra"]["context_length"] == 8192

            reply = await api.chat.completions.create(
                model=LLAMA, messages=[{"role": "user", "content": "hi [[tokens=3]]"}])
            assert reply.choices[0].message.content == "Hello word1 word2."
            assert reply.usage is not None and reply.usage.completion_tokens == 3

            stream = await api.chat.completions.create(
                model=LLAMA, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "hi [[tokens=4]]"}])
            chunks = [c async for c in stream]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == "Hello word1 word2 word3."
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4

            # Not asked for: no usage chunk reaches the client, yet the tokens are recorded.
            quiet = await api.chat.completions.create(
                model=LLAMA, stream=True, messages=[{"role": "user", "content": "[[tokens=6]]"}])
            assert all([c.usage is None and c.choices async for c in quiet])

            tool = await api.chat.completions.create(
                model=LLAMA, messages=[{"role": "user", "content": "weather?"}],
                tools=[{"type": "function", "function": {
                    "name": "weather", "parameters": {"type": "object", "properties": {
                        "city": {"type": "string"}}}}}])
            call = tool.choices[0].message.tool_calls[0]
            assert call.function.name == "weather" and json.loads(call.function.arguments) == {
                "city": "text"}
            assert tool.choices[0].finish_reason == "tool_calls"

            structured = await api.chat.completions.create(
                model="qwen/qwen3-8b@vllm", response_format={"type": "json_object"},
                messages=[{"role": "user", "content": "json please"}])
            assert isinstance(json.loads(structured.choices[0].message.content or ""), dict)
            [sent] = [r for r in await vllm.requests("/v1/chat/completions")
                      if r["body"].get("response_format")]
            assert sent["body"]["model"] == "qwen/qwen3-8b"  # vLLM's own name
            assert "options" not in sent["body"] and "num_ctx" not in json.dumps(sent["body"])

            on_lms = await api.chat.completions.create(
                model="qwen/qwen3-8b", messages=[{"role": "user", "content": "hi"}])
            assert on_lms.choices[0].message.content
            assert len(await lms.requests("/v1/chat/completions")) == 1

            vectors = await api.embeddings.create(model="text-embedding-nomic-embed-text-v1.5",
                                                  input=["one two", "three"])
            assert len(vectors.data) == 2 and vectors.usage.prompt_tokens == 3

            with pytest.raises(openai.BadRequestError):  # a chat model cannot embed: 400, once
                await api.embeddings.create(model="qwen/qwen3-8b", input="x")

            await vllm.kill()

            async def withdrawn() -> bool:
                return LLAMA not in {m.id for m in (await api.models.list()).data}

            await eventually(withdrawn, timeout_s=20, interval_s=0.1, what="vLLM withdrawn")
            await vllm.start()
            await listed(api, LLAMA)
            again = await api.chat.completions.create(
                model=LLAMA, messages=[{"role": "user", "content": "back?"}])
            assert again.choices[0].message.content
    with sqlite3.connect(tmp_path / "home" / "pendra.db") as db:
        rows = db.execute("SELECT model_served, stream, completion_tokens, kind FROM usage "
                          "WHERE status = 200").fetchall()
    assert (LLAMA, 1, 6, "chat") in rows and (LLAMA, 1, 4, "chat") in rows
    assert any(r[0] == "text-embedding-nomic-embed-text-v1.5" for r in rows)


async def test_lmstudio_install_from_the_catalogue_with_progress(tmp_path: Path) -> None:
    """POST /api/v1/installs with backend lmstudio downloads through LM Studio's API, progress
    streaming to the end, and the model is served afterwards; removing it is refused with the
    reason; an install into vLLM is refused with vLLM's reason."""
    async with run_openai_compat("lmstudio") as lms, run_openai_compat("vllm") as vllm, \
            pendra_up(tmp_path / "home", tmp_path / "up.log", LMSTUDIO_ENDPOINT=lms.base_url,
                      VLLM_ENDPOINT=vllm.base_url) as (proc, url, key):
        await lms.configure(download_bytes_per_s=1_000_000)
        env = {**os.environ, "PENDRA_HOME": str(tmp_path / "home")}
        worker = "box"
        async with AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as api:
            await listed(api, "qwen/qwen3-8b", LLAMA)  # the worker is connected, both verified
        result = await asyncio.to_thread(subprocess.run, [PENDRA, "models", "install", "llama3.2:3b", "--worker", worker,
                                 "--backend", "lmstudio"], capture_output=True, text=True,
                                env=env, timeout=120 * WAIT)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Installed" in result.stdout
        [download] = await lms.requests("/api/v1/models/download")
        assert download["body"] == {
            "model": "https://huggingface.co/lmstudio-community/Llama-3.2-3B-Instruct-GGUF",
            "quantization": "Q4_K_M"}
        statuses = await lms.requests()
        assert sum(r["path"].startswith("/api/v1/models/download/status/") for r in statuses) >= 1
        async with AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as api:
            await listed(api, "llama-3.2-3b-instruct")
        removed = subprocess.run([PENDRA, "models", "remove", "llama-3.2-3b-instruct",
                                  "--worker", worker], capture_output=True, text=True, env=env,
                                 timeout=60 * WAIT)
        assert removed.returncode == 1, removed.stderr
        assert "remove it inside the LM Studio app" in " ".join(removed.stderr.split())
        into_vllm = subprocess.run([PENDRA, "models", "install", "qwen3:8b", "--worker", worker,
                                    "--backend", "vllm"], capture_output=True, text=True, env=env,
                                   timeout=60 * WAIT)
        assert into_vllm.returncode == 1
        said = " ".join(into_vllm.stderr.split())
        assert "the vllm backend of worker 'box' cannot install models: vLLM serves the model it " \
               "was launched with" in said, said


def test_pendra_backends_shows_every_backend_tried_and_why(tmp_path: Path) -> None:
    """`pendra backends --json`: every kind, verified or not and why, disabled ones included."""

    async def run() -> list[dict[str, object]]:
        async with run_openai_compat("vllm") as vllm, run_openai_compat("llamacpp") as llama, \
                run_emulator() as ollama:
            endpoints = json.dumps([{"url": llama.base_url, "name": "llamacpp"}, DEAD])
            result = await asyncio.to_thread(
                subprocess.run, [PENDRA, "backends", "--json"], capture_output=True, text=True,
                timeout=60 * WAIT,
                env={**os.environ, "PENDRA_HOME": str(tmp_path), "OLLAMA_ENDPOINT": ollama.base_url,
                     "LMSTUDIO_ENDPOINT": vllm.base_url, "VLLM_ENDPOINT": vllm.base_url,
                     "OPENAI_ENDPOINTS": endpoints, "BACKENDS_DISABLED": "ollama,speaches"})
            assert result.returncode == 0, result.stderr
            found: list[dict[str, object]] = json.loads(result.stdout)
            return found

    found = {b["kind"]: b for b in asyncio.run(run())}
    assert list(found) == ["ollama", "lmstudio", "vllm", "speaches", "llamacpp", "openai"]
    assert found["ollama"]["reason"] == found["speaches"]["reason"] == \
        "disabled by BACKENDS_DISABLED"
    assert not found["lmstudio"]["verified"] and "/api/v1/models" in str(found["lmstudio"]["reason"])
    assert found["vllm"]["verified"] and found["vllm"]["version"] == "0.11.0"
    assert found["llamacpp"]["verified"] and found["llamacpp"]["version"] == "llamacpp"
    assert not found["openai"]["verified"] and "not answering" in str(found["openai"]["reason"])


async def test_vllm_killed_mid_stream_ends_the_stream_with_an_error_then_503(
        tmp_path: Path) -> None:
    """vLLM dying in the middle of a stream ends the client's stream with an error event (not a
    hang); while it is down its model answers 503 with Retry-After; it serves again on return."""
    async with run_openai_compat("vllm") as vllm, \
            pendra_up(tmp_path / "home", tmp_path / "up.log", VLLM_ENDPOINT=vllm.base_url,
                      REFRESH_INTERVAL="30") as (proc, url, key):
        async with AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as api:
            await listed(api, LLAMA)
            stream = await api.chat.completions.create(
                model=LLAMA, stream=True,
                messages=[{"role": "user", "content": "[[tokens=400]] [[delay=0.05]]"}])
            received = 0
            with pytest.raises(openai.APIError) as caught:
                async with asyncio.timeout(20 * WAIT):
                    async for _ in stream:
                        received += 1
                        if received == 3:
                            await vllm.kill()
            assert "vllm" in str(caught.value).lower() and 3 <= received < 400
            async with httpx.AsyncClient(base_url=url, timeout=10 * WAIT) as http:
                down = await http.post("/v1/chat/completions", headers={
                    "Authorization": f"Bearer {key}"}, json={
                    "model": LLAMA, "messages": [{"role": "user", "content": "x"}]})
                assert down.status_code == 503, down.text
                assert int(down.headers["retry-after"]) >= 1
            await vllm.start()

            async def served() -> bool:
                try:
                    await api.chat.completions.create(
                        model=LLAMA, messages=[{"role": "user", "content": "back"}])
                except openai.APIStatusError:
                    return False
                return True

            await eventually(served, timeout_s=15, interval_s=0.2, what="vLLM served again")

"""Pure logic of the OpenAI-compatible backends: passthrough, id heuristics, error bodies, LM
Studio's shapes, the registry's rule for one id on two backends, and the settings they read."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pendra.backends.base import BackendStatus, ModelInfo
from pendra.backends.lmstudio import download_body, model_from_v1
from pendra.backends.openai_compat import passthrough
from pendra.backends.openai_compat.backend import capabilities_from_id, parameter_size_from_id
from pendra.backends.openai_compat.client import error_message, raise_for
from pendra.backends.registry import BackendRegistry, BackendSpec
from pendra.config import ConfigError, WorkerSettings, load_worker
from pendra.errors import BackendRejected, ModelNotFound
from pendra.home import Home


def test_chat_request_changes_only_the_model_and_asks_for_stream_usage() -> None:
    body = {"model": "alias", "messages": [{"role": "user", "content": "x"}], "temperature": 0,
            "tools": [{"type": "function"}], "response_format": {"type": "json_object"},
            "options": {"num_ctx": 5}}
    assert passthrough.chat_request(body, "native") == {**body, "model": "native"}
    streamed = passthrough.chat_request({**body, "stream": True,
                                         "stream_options": {"continuous_usage_stats": True}}, "n")
    assert streamed["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}
    assert "stream_options" not in body  # the client's body is not touched


def test_chunk_relay_hides_the_usage_chunk_unless_asked_and_renames_the_model() -> None:
    events = [{"model": "n", "choices": [{"delta": {"content": "a"}, "finish_reason": None}],
               "usage": None},
              {"model": "n", "choices": [{"delta": {}, "finish_reason": "length"}], "usage": None},
              {"model": "n", "choices": [], "usage": {"prompt_tokens": 3,
                                                      "completion_tokens": 1}}]
    quiet = passthrough.ChunkRelay(model="alias", wants_usage=False, name="vLLM")
    out = [quiet.feed(e) for e in events]
    assert out[2] is None and all("usage" not in o for o in out[:2] if o)
    assert out[0] is not None and out[0]["model"] == "alias"
    assert (quiet.usage.prompt_tokens, quiet.usage.completion_tokens,
            quiet.finish_reason) == (3, 1, "length")
    loud = passthrough.ChunkRelay(model="alias", wants_usage=True, name="vLLM")
    assert [loud.feed(e) is not None for e in events] == [True, True, True]
    with pytest.raises(BackendRejected):
        quiet.feed({"object": "chat.completion.chunk"})


def test_whole_answers_and_embeddings_must_have_the_openai_shape() -> None:
    data, usage, finish = passthrough.completion(
        {"model": "n", "choices": [{"message": {}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 2, "completion_tokens": -1}}, model="a", name="x")
    assert data["model"] == "a" and (usage.prompt_tokens, usage.completion_tokens) == (2, 0)
    assert finish == "stop"
    with pytest.raises(BackendRejected):
        passthrough.completion({"error": "x"}, model="a", name="x")
    answer, used = passthrough.embeddings({"data": [], "usage": {"prompt_tokens": 4}},
                                          model="a", name="x")
    assert used.prompt_tokens == 4 and used.completion_tokens == 0
    with pytest.raises(BackendRejected):
        passthrough.embeddings([], model="a", name="x")


@pytest.mark.parametrize("model_id, capabilities, size", [
    ("meta-llama/Llama-3.1-70B-Instruct", ("completion",), "70B"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", ("completion",), "8X7B"),
    ("Qwen/Qwen2.5-0.5B-Instruct", ("completion",), "0.5B"),
    ("BAAI/bge-m3", ("embedding",), ""),
    ("nomic-ai/nomic-embed-text-v1.5", ("embedding",), ""),
    ("intfloat/e5-mistral-7b-instruct", ("embedding",), "7B"),
    ("sentence-transformers/all-MiniLM-L6-v2", ("embedding",), ""),
    ("gpt2", ("completion",), ""),
])
def test_what_an_id_says(model_id: str, capabilities: tuple[str, ...], size: str) -> None:
    assert capabilities_from_id(model_id) == capabilities
    assert parameter_size_from_id(model_id) == size


@pytest.mark.parametrize("body, message", [
    ({"error": {"message": "m1", "type": "BadRequestError"}}, "m1"),
    ({"object": "error", "message": "m2", "code": 400}, "m2"),
    ({"detail": "m3"}, "m3"),
    ({"detail": [{"msg": "a"}, {"msg": "b"}]}, "a; b"),
    ({"error": "m4"}, "m4"),
    ({"nothing": 1}, None),
    ([1], None),
])
def test_error_bodies_of_every_dialect(body: Any, message: str | None) -> None:
    assert error_message(body) == message


def test_error_statuses_map_to_pendra_errors() -> None:
    with pytest.raises(ModelNotFound, match="vLLM: gone"):
        raise_for(404, '{"error": {"message": "gone"}}', name="vLLM")
    with pytest.raises(BackendRejected) as bad:
        raise_for(400, "plain words", name="vLLM")
    assert bad.value.status == 400 and bad.value.message == "vLLM: plain words"
    with pytest.raises(BackendRejected) as denied:
        raise_for(401, '{"error": "Unauthorized"}', name="vLLM")
    assert denied.value.status == 502 and "credentials" in denied.value.message
    raise_for(200, "", name="vLLM")


def test_lmstudio_download_body_and_model_entries() -> None:
    assert download_body("ibm/granite-4-micro") == {"model": "ibm/granite-4-micro"}
    assert download_body("https://huggingface.co/o/R-GGUF@Q8_0") == {
        "model": "https://huggingface.co/o/R-GGUF", "quantization": "Q8_0"}
    info = model_from_v1({"type": "llm", "key": "k", "loaded_instances": [],
                          "max_context_length": 100, "capabilities": {"vision": True},
                          "quantization": None, "size_bytes": 7})
    assert info is not None and info.capabilities == ("completion", "vision")
    assert info.context_length == 100 and info.size == 7
    assert model_from_v1({"type": "llm", "key": "x" * 300}) is None  # too long: left out


class Fake:
    """A backend that verifies at once and serves the given ids."""

    def __init__(self, kind: str, ids: list[str]) -> None:
        self.kind, self.ids = kind, ids

    async def verify(self, endpoint: str) -> BackendStatus:
        return BackendStatus(self.kind, endpoint, True, version="1")

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=i, backend=self.kind, capabilities=("completion",)) for i in self.ids]

    async def aclose(self) -> None:
        pass


def settings(**changes: Any) -> WorkerSettings:
    base = WorkerSettings(server_ws_url="ws://127.0.0.1:9", private_key="", worker_id="wrk-t",
                          worker_name="t", models=None, max_concurrent=1, ollama_endpoint="",
                          refresh_interval_s=60, ollama_num_ctx_cap=0, heartbeat_interval_s=1,
                          heartbeat_timeout_s=3)
    return replace(base, **changes)


def spec(kind: str, ids: list[str]) -> BackendSpec:
    return BackendSpec(kind, ("http://x",), "", "X", lambda: Fake(kind, ids))  # type: ignore


async def test_one_name_on_two_backends_keeps_the_plain_id_for_the_first() -> None:
    registry = BackendRegistry(settings(), specs=[
        spec("ollama", ["qwen3:8b", "only-ollama"]),
        spec("lmstudio", ["Qwen3:8B", "solo"]),  # the same name by name_key
        spec("vllm", ["qwen3:8b", "solo"])])
    await registry.refresh()
    offered = [(m.id, m.backend) for m in registry.models()]
    assert offered == [("qwen3:8b", "ollama"), ("only-ollama", "ollama"),
                       ("Qwen3:8B@lmstudio", "lmstudio"), ("solo", "lmstudio"),
                       ("qwen3:8b@vllm", "vllm"), ("solo@vllm", "vllm")]
    backend, native = registry.backend_for("solo@vllm")
    assert backend.kind == "vllm" and native.id == "solo"
    with pytest.raises(ModelNotFound):
        registry.backend_for("solo@ollama")


async def test_models_filter_names_the_backends_own_ids() -> None:
    registry = BackendRegistry(settings(models=("solo",)), specs=[
        spec("lmstudio", ["solo", "other"]), spec("vllm", ["solo"])])
    await registry.refresh()
    assert [m.id for m in registry.models()] == ["solo", "solo@vllm"]


async def test_a_disabled_kind_is_reported_and_its_unknown_names_warned(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = BackendRegistry(settings(backends_disabled=("vllm", "typo")), specs=[
        spec("ollama", ["a"]), spec("vllm", ["b"])])
    await registry.refresh()
    assert [m.id for m in registry.models()] == ["a"]
    [_, off] = registry.statuses()
    assert off.reason == "disabled by BACKENDS_DISABLED" and not off.tried
    assert "BACKENDS_DISABLED names typo" in caplog.text
    with pytest.raises(Exception, match="disabled"):
        registry.backend_of_kind("vllm")
    assert await registry.recheck("vllm") is None


def test_settings_parse_endpoints_and_disabled_backends(tmp_path: Path) -> None:
    home = Home(tmp_path)
    loaded = load_worker(home, {
        "OPENAI_ENDPOINTS": '["http://a:1/", {"url": "http://b:2", "name": "SGLang", '
                            '"api_key": "k"}, "http://c:3"]',
        "BACKENDS_DISABLED": "vllm, LMStudio", "VLLM_ENDPOINT": "http://v:8000/"},
        require_key=False)
    assert loaded.openai_endpoints == (
        {"name": "openai", "url": "http://a:1", "api_key": ""},
        {"name": "sglang", "url": "http://b:2", "api_key": "k"},
        {"name": "openai-2", "url": "http://c:3", "api_key": ""})
    assert loaded.backends_disabled == ("vllm", "lmstudio")
    assert loaded.vllm_endpoint == "http://v:8000"
    for bad in ('[{"url": "ftp://x"}]', '[{"url": "http://x", "name": "a b"}]',
                '[{"url": "http://x", "name": "n"}, {"url": "http://y", "name": "n"}]', "{",
                '[{"url": "http://x", "name": "vllm"}]', json.dumps([f"http://h{i}" for i in range(9)])):
        with pytest.raises(ConfigError, match="OPENAI_ENDPOINTS"):
            load_worker(home, {"OPENAI_ENDPOINTS": bad}, require_key=False)
    with pytest.raises(ConfigError, match="BACKENDS_DISABLED"):
        load_worker(home, {"BACKENDS_DISABLED": "v llm"}, require_key=False)


def test_backend_keys_are_secrets_never_printed() -> None:
    from pendra.cli import _hidden, _secret

    assert _secret("VLLM_API_KEY") and _secret("lmstudio_api_token")
    assert _secret("GPU_WORKER_PRIVATE_KEY") and not _secret("vllm_endpoint")
    shown = _hidden("openai_endpoints", ({"name": "a", "url": "http://x", "api_key": "k"},))
    assert shown == [{"name": "a", "url": "http://x", "api_key": "<hidden>"}]

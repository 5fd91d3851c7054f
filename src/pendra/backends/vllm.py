"""vLLM: an externally managed OpenAI-compatible server (one model per process, usually).

Verification (vLLM's own API, so that another server on port 8000 — Speaches, a web app — is never
taken for it): ``GET /version`` must answer ``{"version": str}`` and ``GET /v1/models`` an OpenAI
list whose every entry is ``owned_by: "vllm"`` and carries vLLM's ``max_model_len``. Models: each
entry's ``id``, context length from ``max_model_len``, parameter size read from the id (the docs'
rule), and chat or embedding guessed from the id (vLLM's list does not say which task it runs).
No install or uninstall: vLLM serves what it was launched with (``--model``); changing that is a
restart of vLLM, outside Pendra.
"""

from __future__ import annotations

from pendra.backends.base import ModelInfo
from pendra.backends.openai_compat.backend import (NotThisBackend, OpenAICompatBackend,
                                                   capabilities_from_id, model_info,
                                                   parameter_size_from_id, positive_int)
from pendra.backends.openai_compat.client import OpenAICompatClient
from pendra.errors import ModelNotFound

PROBES = ("http://localhost:8000", "http://host.docker.internal:8000")


class VLLMBackend(OpenAICompatBackend):
    kind = "vllm"
    display = "vLLM"
    capabilities = ("chat", "embed")

    async def discover(self, client: OpenAICompatClient) -> tuple[str, list[ModelInfo]]:
        try:
            version = await client.get_json("/version")
        except ModelNotFound as exc:
            raise NotThisBackend("GET /version answered 404: vLLM has that route") from exc
        if not isinstance(version, dict) or not isinstance(version.get("version"), str):
            raise NotThisBackend("GET /version did not answer vLLM's {\"version\": …}")
        listing = await client.get_json("/v1/models")
        entries = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(entries, list) or not entries:
            raise NotThisBackend("GET /v1/models did not answer vLLM's list of served models")
        models: list[ModelInfo] = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise NotThisBackend("GET /v1/models listed an entry without an id")
            if entry.get("owned_by") != "vllm":
                raise NotThisBackend(f"GET /v1/models entries are owned by "
                                     f"{str(entry.get('owned_by'))[:40]!r}, not 'vllm'")
            if "max_model_len" not in entry:
                raise NotThisBackend("GET /v1/models entries carry no max_model_len")
            # ``root`` is the model path it was launched with (the id may be --served-model-name).
            root = entry.get("root") if isinstance(entry.get("root"), str) else entry["id"]
            info = model_info(self.kind, id=entry["id"],
                              context_length=positive_int(entry.get("max_model_len")),
                              capabilities=capabilities_from_id(root),
                              parameter_size=parameter_size_from_id(root))
            if info is not None:
                models.append(info)
        return version["version"], models

    def no_install_reason(self) -> str:
        return ("vLLM serves the model it was launched with (--model); to serve another, restart "
                "vLLM with it")

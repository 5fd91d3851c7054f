"""Any other OpenAI-compatible server (llama.cpp's llama-server, SGLang, TGI, LocalAI, …).

Never probed: each one is named in ``OPENAI_ENDPOINTS`` (a URL, or ``{"url", "name", "api_key"}``);
its kind is the name given, else ``openai`` for the first and ``openai-2``, ``openai-3``… after.
Verification: ``GET /v1/models`` must answer an OpenAI list (``{"data": [{"id": …}, …]}``); the
version shown is the ``owned_by`` its entries name (``llamacpp``, ``sglang``…). Context length is
read from whichever field the server offers (``max_model_len``: vLLM, SGLang; ``meta.n_ctx_train``:
llama-server; ``context_length``/``context_window``: others); chat or embedding is guessed from the
id. No install or uninstall: the server serves what it was started with.
"""

from __future__ import annotations

from typing import Any

from pendra.backends.base import ModelInfo
from pendra.backends.openai_compat.backend import (NotThisBackend, OpenAICompatBackend,
                                                   capabilities_from_id, model_info,
                                                   parameter_size_from_id, positive_int)
from pendra.backends.openai_compat.client import OpenAICompatClient


def context_of(entry: dict[str, Any]) -> int | None:
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    for value in (entry.get("max_model_len"), meta.get("n_ctx_train"), entry.get("context_length"),
                  entry.get("context_window")):
        if (found := positive_int(value)) is not None:
            return found
    return None


class GenericBackend(OpenAICompatBackend):
    kind = "openai"
    display = "OpenAI-compatible server"
    capabilities = ("chat", "embed")

    async def discover(self, client: OpenAICompatClient) -> tuple[str, list[ModelInfo]]:
        listing = await client.get_json("/v1/models")
        entries = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(entries, list):
            raise NotThisBackend("GET /v1/models did not answer an OpenAI list "
                                 "({\"data\": [{\"id\": …}]})")
        models: list[ModelInfo] = []
        owners: list[str] = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise NotThisBackend("GET /v1/models listed an entry without an id")
            owner = entry.get("owned_by")
            if isinstance(owner, str) and owner and owner not in owners:
                owners.append(owner)
            info = model_info(self.kind, id=entry["id"], context_length=context_of(entry),
                              capabilities=capabilities_from_id(entry["id"]),
                              parameter_size=parameter_size_from_id(entry["id"]))
            if info is not None:
                models.append(info)
        return ", ".join(owners)[:64], models

    def no_install_reason(self) -> str:
        return "it serves the models it was started with"

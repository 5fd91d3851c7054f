"""LM Studio: chat and embeddings through its OpenAI-compatible API, models from its own REST API.

Verification uses LM Studio's own REST API, not only ``/v1/models`` (which any OpenAI-compatible
server answers): ``GET /api/v1/models`` (LM Studio 0.4+) must answer ``{"models": [...]}`` whose
entries have LM Studio's ``key`` and ``type`` (``llm`` | ``embedding``); an LM Studio older than
that is recognised by ``GET /api/v0/models`` (0.3.6+, ``{"data": [...]}`` with ``type`` ``llm`` |
``vlm`` | ``embeddings`` and ``state``). The version shown is the REST API found (``rest v1``/``v0``).

Models: every downloaded model, loaded or not (LM Studio loads one on its first request). Type
gives chat or embedding (``vision`` and ``tools`` from v1's ``capabilities``); the context length is
the loaded instance's ``context_length`` when it is loaded (that is what it will accept), else the
model's ``max_context_length``; parameters, quantisation, format, architecture and size as LM
Studio lists them.

Install: ``POST /api/v1/models/download {"model": …}`` (an LM Studio catalog identifier such as
``ibm/granite-4-micro``, or a Hugging Face link with ``quantization`` taken from a trailing
``@Q4_K_M``), then ``GET /api/v1/models/download/status/{job}``
every ``POLL_S`` until ``completed`` (or ``already_downloaded`` at once) — downloaded bytes of total
are the progress, never going backwards — or ``failed`` (``InstallFailed``). LM Studio documents no
cancel: cancelling the install stops Pendra following it, and the download goes on in LM Studio.
A v0-only LM Studio has no download API, so it cannot install (its status says so). Uninstall:
LM Studio's API has no delete, so models are removed inside the LM Studio app.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pendra.backends.base import InstallProgress, ModelInfo, ProgressCallback
from pendra.backends.openai_compat.backend import (NotThisBackend, OpenAICompatBackend,
                                                   model_info, positive_int)
from pendra.backends.openai_compat.client import OpenAICompatClient
from pendra.errors import BackendError, BackendUnavailable, InstallFailed, ModelNotFound, UnsupportedOperation

PROBES = ("http://localhost:1234", "http://host.docker.internal:1234")
# Seconds between two reads of a download's status: four figures a second, like Ollama's stream.
POLL_S = 0.25
V1, V0 = "rest v1", "rest v0"


def _text(value: Any) -> str:
    return value[:64] if isinstance(value, str) else ""


HUGGING_FACE = "https://huggingface.co/"


def download_body(model: str) -> dict[str, str]:
    """The download request for a catalogue ``lmstudio`` id: a Hugging Face link may end in
    ``@<quantization>``, sent as LM Studio's ``quantization`` field (documented for links only)."""
    if model.startswith(HUGGING_FACE) and "@" in model[len(HUGGING_FACE):]:
        link, _, quantization = model.rpartition("@")
        return {"model": link, "quantization": quantization}
    return {"model": model}


def model_from_v1(entry: dict[str, Any]) -> ModelInfo | None:
    kind = entry.get("type")
    if kind == "embedding":
        capabilities: tuple[str, ...] = ("embedding",)
    else:
        caps = entry.get("capabilities") if isinstance(entry.get("capabilities"), dict) else {}
        capabilities = ("completion",) + (("tools",) if caps.get("trained_for_tool_use") else ()) \
            + (("vision",) if caps.get("vision") else ())
    loaded = [i for i in entry.get("loaded_instances") or [] if isinstance(i, dict)]
    context = None
    if loaded and isinstance(loaded[0].get("config"), dict):
        context = positive_int(loaded[0]["config"].get("context_length"))
    quant = entry.get("quantization") if isinstance(entry.get("quantization"), dict) else {}
    return model_info("lmstudio", id=entry["key"],
                      context_length=context or positive_int(entry.get("max_context_length")),
                      capabilities=capabilities, parameter_size=_text(entry.get("params_string")),
                      quantization_level=_text(quant.get("name")), format=_text(entry.get("format")),
                      family=_text(entry.get("architecture")),
                      size=positive_int(entry.get("size_bytes")) or 0)


def model_from_v0(entry: dict[str, Any]) -> ModelInfo | None:
    kind = entry.get("type")
    capabilities = (("embedding",) if kind == "embeddings" else
                    ("completion", "vision") if kind == "vlm" else ("completion",))
    return model_info("lmstudio", id=entry["id"],
                      context_length=positive_int(entry.get("max_context_length")),
                      capabilities=capabilities, quantization_level=_text(entry.get("quantization")),
                      format=_text(entry.get("compatibility_type")),
                      family=_text(entry.get("arch")))


class LMStudioBackend(OpenAICompatBackend):
    kind = "lmstudio"
    display = "LM Studio"
    capabilities = ("chat", "embed", "install")

    async def discover(self, client: OpenAICompatClient) -> tuple[str, list[ModelInfo]]:
        try:
            listing = await client.get_json("/api/v1/models")
        except ModelNotFound:  # a 404: no v1 REST API here (LM Studio before 0.4, or not LM Studio)
            return await self._discover_v0(client)
        entries = listing.get("models") if isinstance(listing, dict) else None
        if not isinstance(entries, list):
            raise NotThisBackend("GET /api/v1/models did not answer LM Studio's {\"models\": […]}")
        models = []
        for entry in entries:
            if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
                    and entry.get("type") in ("llm", "embedding")):
                raise NotThisBackend("GET /api/v1/models listed an entry without LM Studio's "
                                     "key and type")
            if (info := model_from_v1(entry)) is not None:
                models.append(info)
        self.capabilities = ("chat", "embed", "install")
        return V1, models

    async def _discover_v0(self, client: OpenAICompatClient) -> tuple[str, list[ModelInfo]]:
        try:
            listing = await client.get_json("/api/v0/models")
        except ModelNotFound as exc:
            raise NotThisBackend("neither GET /api/v1/models nor GET /api/v0/models (LM Studio's "
                                 "REST API) answered") from exc
        entries = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(entries, list):
            raise NotThisBackend("GET /api/v0/models did not answer LM Studio's {\"data\": […]}")
        models = []
        for entry in entries:
            if not (isinstance(entry, dict) and isinstance(entry.get("id"), str)
                    and entry.get("type") in ("llm", "vlm", "embeddings")
                    and isinstance(entry.get("state"), str)):
                raise NotThisBackend("GET /api/v0/models listed an entry without LM Studio's "
                                     "type and state")
            if (info := model_from_v0(entry)) is not None:
                models.append(info)
        self.capabilities = ("chat", "embed")
        return V0, models

    async def install(self, model: str, progress: ProgressCallback) -> None:
        client = self._require()
        if self.version != V1:
            raise UnsupportedOperation(f"the {self.display} backend cannot install models: "
                                       f"{self.no_install_reason()}")
        try:
            job = await client.request_json("POST", "/api/v1/models/download",
                                            download_body(model))
            done = total = 0
            while True:
                if not isinstance(job, dict) or not isinstance(job.get("status"), str):
                    raise InstallFailed("LM Studio answered a download without a status")
                status = job["status"]
                total = max(total, positive_int(job.get("total_size_bytes")) or 0)
                done = max(done, positive_int(job.get("downloaded_bytes")) or 0)
                if status in ("completed", "already_downloaded"):
                    done = total = max(done, total)
                    await _report(progress, InstallProgress("success", done, total))
                    return
                if status == "failed":
                    raise InstallFailed(f"LM Studio failed to download '{model}'")
                await _report(progress, InstallProgress(status, done, max(total, done)))
                job_id = job.get("job_id")
                if not isinstance(job_id, str) or not job_id:
                    raise InstallFailed("LM Studio answered a download without a job_id")
                await asyncio.sleep(POLL_S)
                job = await client.get_json(f"/api/v1/models/download/status/{job_id}")
        except BackendUnavailable as exc:
            raise InstallFailed(f"LM Studio went away during the install: {exc.message}") from exc
        except (InstallFailed, UnsupportedOperation):
            raise
        except BackendError as exc:
            raise InstallFailed(exc.message) from exc

    def no_install_reason(self) -> str:
        if self.version == V0:
            return ("this LM Studio has only the REST API v0, which has no download API; LM Studio "
                    "0.4 or newer installs from the catalogue")
        return ""

    def no_uninstall_reason(self) -> str:
        return "LM Studio's API has no way to delete a model; remove it inside the LM Studio app"


async def _report(progress: ProgressCallback, update: InstallProgress) -> None:
    outcome = progress(update)
    if outcome is not None:
        await outcome

"""Finding and describing an Ollama: verification, then model metadata.

Verification: ``GET /api/version`` must answer ``{"version": str}`` and ``GET /api/tags`` must answer
``{"models": [...]}``; anything else is not Ollama and is rejected with a reason. Metadata: one
``POST /api/show`` per model with at most ``SHOW_CONCURRENCY`` in flight; a model whose digest has
not changed keeps its metadata without asking again; a model whose ``show`` fails is still listed
with what ``/api/tags`` said; a model whose metadata does not fit the protocol's inventory
(``ModelInfo``'s bounds: an id of over 256 characters, an impossible context length) is left out
with a warning, so one odd model never keeps the worker from connecting.

A capability Pendra cannot serve through this Ollama is never advertised: ``image`` only on the
versions that have image generation (version.py; elsewhere such a model is not an image model at
all, and no image request is routed to it), and ``audio`` only from v0.20.0, which added
``/v1/audio/transcriptions`` (older versions cannot transcribe, so nothing they serve is a
transcription model).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from pendra.backends.base import BackendStatus, ModelInfo
from pendra.backends.ollama.client import OllamaClient
from pendra.backends.ollama.version import has_image_generation, has_transcription
from pendra.errors import BackendError
from pendra.protocol.peer_text import peer_text

log = logging.getLogger(__name__)

SHOW_CONCURRENCY = 5  # the documented bound on parallel /api/show calls
CAPABILITIES = ("chat", "complete", "embed", "image", "transcribe", "install", "uninstall")


def served_capabilities(capabilities: tuple[str, ...], version: str) -> tuple[str, ...]:
    """What of a model's ``capabilities`` this Ollama ``version`` can serve."""
    dropped = set()
    if not has_image_generation(version):
        dropped.add("image")
    if not has_transcription(version):
        dropped.add("audio")
    return tuple(c for c in capabilities if c not in dropped)


def backend_capabilities(version: str) -> tuple[str, ...]:
    """What this Ollama ``version`` can do for Pendra (images and transcription are gated)."""
    return tuple(c for c in CAPABILITIES
                 if (c != "image" or has_image_generation(version))
                 and (c != "transcribe" or has_transcription(version)))


async def verify(client: OllamaClient) -> tuple[BackendStatus, dict[str, Any] | None]:
    """The endpoint's status, and the ``/api/tags`` answer that verified it (None if it did not):
    ``list_models`` right after may use that answer instead of asking again."""
    endpoint = client.base_url
    try:
        version = await client.get_json("/api/version")
        if not isinstance(version, dict) or not isinstance(version.get("version"), str):
            return BackendStatus("ollama", endpoint, False,
                                 reason="GET /api/version did not answer Ollama's {\"version\": …}"), None
        tags = await client.get_json("/api/tags")
        if not isinstance(tags, dict) or not isinstance(tags.get("models"), list):
            return BackendStatus("ollama", endpoint, False, version=version["version"],
                                 reason="GET /api/tags did not answer Ollama's {\"models\": […]}"), None
    except BackendError as exc:
        return BackendStatus("ollama", endpoint, False, reason=exc.message), None
    return BackendStatus("ollama", endpoint, True, version=version["version"],
                         capabilities=backend_capabilities(version["version"])), tags


def _info(tag: dict[str, Any], show: dict[str, Any] | None) -> ModelInfo:
    details = dict(tag.get("details") or {})
    capabilities = list(tag.get("capabilities") or [])
    context: int | None = details.get("context_length")
    if show is not None:
        details.update({k: v for k, v in (show.get("details") or {}).items() if v})
        capabilities = list(show.get("capabilities") or capabilities)
        info = show.get("model_info") or {}
        arch = info.get("general.architecture")
        value = info.get(f"{arch}.context_length") if arch else None
        if isinstance(value, int) and value > 0:
            context = value
    if not capabilities:
        family = str(details.get("family", "")).lower()
        capabilities = ["embedding"] if "bert" in family or "embed" in tag.get("name", "") else ["completion"]
    return ModelInfo(
        id=tag.get("model") or tag.get("name", ""), backend="ollama", context_length=context,
        capabilities=tuple(capabilities), parameter_size=details.get("parameter_size", ""),
        quantization_level=details.get("quantization_level", ""), format=details.get("format", ""),
        family=details.get("family", ""), size=int(tag.get("size") or 0),
        digest=tag.get("digest", ""), modified_at=tag.get("modified_at", ""))


async def list_models(client: OllamaClient, cache: dict[str, ModelInfo], version: str,
                      tags: dict[str, Any] | None = None) -> list[ModelInfo]:
    """Every installed model with metadata, advertising what this Ollama ``version`` can serve.

    ``tags`` is a fresh ``/api/tags`` answer (the one verification just read), else it is asked
    for. ``cache`` maps digest → metadata from earlier ticks and is updated in place: fully
    described models are kept, models that are gone are dropped, and a model whose ``show`` failed
    is left out so the next tick asks again.
    """
    if tags is None:
        tags = await client.get_json("/api/tags")
    entries = [t for t in (tags.get("models") or []) if isinstance(t, dict)]
    gate = asyncio.Semaphore(SHOW_CONCURRENCY)
    results: dict[int, ModelInfo] = {}

    async def describe(index: int, tag: dict[str, Any]) -> None:
        name = tag.get("model") or tag.get("name", "")
        cached = cache.get(tag.get("digest", ""))
        if cached is not None and cached.id == name:
            results[index] = cached
            return
        async with gate:
            try:
                show = await client.request_json("POST", "/api/show", {"model": name})
            except BackendError as exc:
                log.warning("ollama: /api/show %s failed (%s); listing it with /api/tags data",
                            name, exc.message)
                show = None
        try:
            info = _info(tag, show if isinstance(show, dict) else None)
        except (ValidationError, TypeError, ValueError) as exc:
            log.warning("ollama: leaving out model %s, whose metadata Pendra cannot carry: %s",
                        peer_text(str(name)), peer_text(str(exc).splitlines()[0]))
            return
        results[index] = info
        if isinstance(show, dict):
            described[info.digest] = info

    described: dict[str, ModelInfo] = {}
    async with asyncio.TaskGroup() as group:
        for index, tag in enumerate(entries):
            group.create_task(describe(index, tag))
    present = {t.get("digest", "") for t in entries}
    for digest in list(cache):
        if digest not in present:
            del cache[digest]
    cache.update(described)
    return [replace(info, capabilities=served_capabilities(info.capabilities, version))
            for info in (results[i] for i in sorted(results))]

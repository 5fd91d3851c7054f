"""``GET /models`` and ``GET /models/{id}``: what connected workers serve right now.

OpenAI's list envelope, one entry per model id however many workers serve it, plus a ``pendra``
object per entry (types, capabilities, context length, the workers serving it). A model's types are
what any worker's copy of it can serve (one worker's Ollama may generate images where another's
cannot), and ``?type=`` filters by them. Codex asks with ``client_version`` and expects
``{"models": [...]}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter

from pendra.backends.base import ModelInfo
from pendra.errors import InvalidRequest
from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import HubDep, RouterDep
from pendra.server.hub import Hub, WorkerView
from pendra.server.routing import Router

router = APIRouter(tags=["models"])

MODEL_TYPES = ("chat", "embedding", "image", "transcription", "ocr")


def _created(info: ModelInfo, workers: list[WorkerView]) -> int:
    """When the model was installed (Ollama's modified_at), else when its worker connected."""
    try:
        return int(datetime.fromisoformat(info.modified_at).timestamp())
    except ValueError:
        return int(min(w.connected_at for w in workers).timestamp())


def served_types(info: ModelInfo, workers: list[WorkerView]) -> list[str]:
    """The types any worker's copy of the model serves, in ``MODEL_TYPES`` order."""
    found = {t for w in workers for t in w.models.get(info.id, info).types} | set(info.types)
    return [t for t in MODEL_TYPES if t in found]


def model_entry(info: ModelInfo, workers: list[WorkerView]) -> dict[str, Any]:
    return {"id": info.id, "object": "model", "created": _created(info, workers),
            "owned_by": "pendra",
            "pendra": {"types": served_types(info, workers), "capabilities": list(info.capabilities),
                       "context_length": info.context_length,
                       "parameter_size": info.parameter_size,
                       "quantization_level": info.quantization_level, "family": info.family,
                       "backend": info.backend, "workers": sorted(w.name for w in workers)}}


def served_models(hub: Hub, model_type: str | None) -> list[dict[str, Any]]:
    if model_type is not None and model_type not in MODEL_TYPES:
        raise InvalidRequest(f"unknown type '{model_type}'; use one of {', '.join(MODEL_TYPES)}")
    return [model_entry(info, workers) for _, (info, workers) in sorted(hub.models().items())
            if model_type is None or model_type in served_types(info, workers)]


def served_model(hub: Hub, routing: Router, model_id: str) -> dict[str, Any]:
    served = hub.models()
    info, workers = served[routing.resolve(model_id)]
    return model_entry(info, workers)


@router.get("/models", summary="List the models connected workers serve now")
async def list_models(_: ApiKeyAuth, hub: HubDep, type: str | None = None,
                      client_version: str | None = None) -> dict[str, Any]:
    entries = served_models(hub, type)
    if client_version is not None:
        return {"models": entries}
    return {"object": "list", "data": entries}


@router.get("/models/{model_id:path}", summary="One served model")
async def get_model(model_id: str, _: ApiKeyAuth, hub: HubDep,
                    routing: RouterDep) -> dict[str, Any]:
    return served_model(hub, routing, model_id)

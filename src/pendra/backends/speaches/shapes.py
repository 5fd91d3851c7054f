"""What Speaches' answers look like, checked without I/O: is this server Speaches, and which of its
models transcribe.

Facts (speaches-ai/speaches, src/speaches/routers/misc.py, routers/models.py, api_types.py,
main.py): ``GET /health`` answers ``{"message": "OK"}``; ``GET /v1/models`` answers ``{"data":
[Model], "object": "list"}`` where every ``Model`` carries Speaches' own ``task`` field
(``automatic-speech-recognition``, ``text-to-speech``, ``speaker-embedding``,
``voice-activity-detection``, ``speaker-diarization``) besides OpenAI's ``id``/``created``/
``object``/``owned_by``, and optionally ``language``; the app is a FastAPI app titled
``Speaches`` whose version is in ``/openapi.json``'s ``info.version``. Errors are FastAPI's
``{"detail": "..."}``.

Rules:
- An endpoint is Speaches only when all three hold: ``/health`` says ``{"message": "OK"}``, every
  ``/v1/models`` entry has an ``id`` and a ``task``, and ``/openapi.json``'s title is
  ``Speaches``. vLLM (the other server on port 8000) answers ``/health`` with an empty body and
  lists models without ``task``, so it is never taken for Speaches, nor is any other server.
- Only ``automatic-speech-recognition`` models are offered, as transcription models
  (capability ``audio``); Speaches' speech synthesis, VAD and diarization models are not served.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pendra.backends.base import ModelInfo
from pendra.protocol.inventory import MAX_MODELS

TITLE = "Speaches"
HEALTHY = {"message": "OK"}
TRANSCRIPTION_TASK = "automatic-speech-recognition"


class NotSpeaches(ValueError):
    """The answer is not Speaches' (the message says which and why)."""


def check_health(status: int, body: Any) -> None:
    if status != 200 or body != HEALTHY:
        raise NotSpeaches(f"GET /health answered {status} without Speaches' "
                          '{"message": "OK"}')


def check_models(status: int, body: Any) -> list[dict[str, Any]]:
    """The model entries of a ``/v1/models`` answer, or NotSpeaches."""
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise NotSpeaches(f"GET /v1/models answered {status} without a model list")
    entries = body["data"]
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]
                and isinstance(entry.get("task"), str)):
            raise NotSpeaches("GET /v1/models lists models without Speaches' `task` field")
    return entries


def check_openapi(status: int, body: Any) -> str:
    """Speaches' version from its OpenAPI document, or NotSpeaches."""
    info = body.get("info") if isinstance(body, dict) else None
    if status != 200 or not isinstance(info, dict) or info.get("title") != TITLE:
        raise NotSpeaches(f"GET /openapi.json answered {status} without the title {TITLE!r}")
    version = info.get("version")
    return version[:64] if isinstance(version, str) else ""


def transcription_models(entries: list[dict[str, Any]]) -> list[ModelInfo]:
    """The transcription models among ``/v1/models`` entries (see the rules), at most
    ``MAX_MODELS``; an entry that does not fit the inventory's bounds is skipped."""
    models: list[ModelInfo] = []
    for entry in entries:
        if entry.get("task") != TRANSCRIPTION_TASK or len(models) >= MAX_MODELS:
            continue
        model_id: str = entry["id"]
        if len(model_id) > 256:
            continue
        created = entry.get("created")
        modified = ""
        if isinstance(created, int) and not isinstance(created, bool) and 0 < created < 2**40:
            modified = datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
        family = "whisper" if "whisper" in model_id.lower() else ""
        models.append(ModelInfo(id=model_id, backend="speaches", capabilities=("audio",),
                                family=family, modified_at=modified))
    return models

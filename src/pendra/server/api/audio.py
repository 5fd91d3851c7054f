"""``POST /audio/transcriptions``: routed like chat (kind ``transcribe``) when a worker can.

Ollama cannot transcribe, so with today's backends this answers a clear 501. OpenAI's multipart
upload is not parsed yet: a worker that serves a transcription model gets a JSON body
(``{"model", "file": <base64>, …}``), and a multipart request is refused with 415 saying so.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from pendra.errors import InvalidRequest, UnsupportedOperation
from pendra.server.api.media_schema import TranscriptionCreate
from pendra.server.api.models import served_types
from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import HubDep, RelayDep
from pendra.server.hub import Hub

router = APIRouter(tags=["inference"])
# The body is read by hand (a multipart upload must get 415, not a validation error), so its
# schema is put in the OpenAPI document explicitly.
_BODY_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": TranscriptionCreate.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


def transcription_models(hub: Hub) -> list[str]:
    return sorted(m for m, (info, workers) in hub.models().items()
                  if "transcription" in served_types(info, workers))


@router.post("/audio/transcriptions", summary="Transcribe audio", openapi_extra=_BODY_SCHEMA)
async def create_transcription(request: Request, key: ApiKeyAuth, hub: HubDep,
                               relay: RelayDep) -> Response:
    if not transcription_models(hub):
        raise UnsupportedOperation("no connected worker serves a transcription model (Ollama "
                                   "cannot transcribe); GET /api/v1/models?type=transcription")
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise InvalidRequest("multipart audio uploads are not supported yet; send JSON with the "
                             "audio base64-encoded in `file`", status=415)
    try:
        raw = await request.json()
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest("request body nests too deep") from exc
    try:
        body = TranscriptionCreate.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=raw) from exc
    return await relay.respond(request, "transcribe", body.to_worker(), key.id)

"""``POST /audio/transcriptions``: routed like chat (kind ``transcribe``) when a worker can.

Ollama cannot transcribe, so with today's backends this answers a clear 501. OpenAI's multipart
upload is not parsed yet: a worker that serves a transcription model gets a JSON body
(``{"model", "file": <base64>, …}``), and a multipart request is refused with 415 saying so.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pendra.errors import InvalidRequest, UnsupportedOperation
from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import HubDep, RelayDep
from pendra.server.hub import Hub

router = APIRouter(tags=["inference"])


class TranscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="A model from GET /models?type=transcription")
    file: str = Field(min_length=1, description="The audio, base64-encoded")


def transcription_models(hub: Hub) -> list[str]:
    return sorted(m for m, (info, _) in hub.models().items() if "transcription" in info.types)


@router.post("/audio/transcriptions", summary="Transcribe audio")
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
    try:
        body = TranscriptionCreate.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(f"body field '{where}': {first.get('msg')}") from exc
    return await relay.respond(request, "transcribe", body.model_dump(exclude_unset=True), key.id)

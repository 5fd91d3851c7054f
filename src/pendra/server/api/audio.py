"""``POST /audio/transcriptions``: OpenAI's multipart upload, routed like chat (kind ``transcribe``).

Rules:
- The upload is read at the edge (upload.py) into one audio file of at most ``max_audio_bytes``
  (413 beyond it, in OpenAI's error shape, before any worker is chosen) and text fields checked
  against ``TranscriptionCreate`` (400 naming the field). Only then is a worker picked; the audio
  travels to it base64 in the request frame (protocol/transcription.py, protocol version 4).
- The answer is the backend's, in the requested format: JSON for json/verbose_json, the text as
  ``text/plain`` for text/srt/vtt. A worker answer in any other shape is the worker's fault (502).
- When no connected worker serves a transcription model the answer is 501 before the upload is
  read: nothing here could serve it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from pendra.errors import InvalidRequest, UnsupportedOperation, WorkerFailed
from pendra.protocol.transcription import AnswerError, TranscriptionJob, job_body, render
from pendra.server.api.media_schema import TranscriptionCreate
from pendra.server.api.models import served_types
from pendra.server.api.upload import read_form
from pendra.server.auth import ApiKeyAuth
from pendra.server.client_json import JSONBytesResponse
from pendra.server.deps import HubDep, RelayDep, SettingsDep
from pendra.server.dialect import EventWriter
from pendra.server.hub import Hub

router = APIRouter(tags=["inference"])
# The field that carries the audio, and the text fields that may appear more than once.
FILE_FIELD = "file"
LIST_FIELDS = frozenset({"timestamp_granularities[]", "timestamp_granularities"})
# The body is read by hand (streamed, bounded), so its schema is put in the OpenAPI document.
_FORM_SCHEMA = TranscriptionCreate.model_json_schema(by_alias=True)
_FORM_SCHEMA["properties"] = {FILE_FIELD: {"type": "string", "format": "binary",
                                           "description": "The audio file"},
                              **_FORM_SCHEMA.get("properties", {})}
_FORM_SCHEMA["required"] = [FILE_FIELD, *_FORM_SCHEMA.get("required", [])]
_BODY_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": _FORM_SCHEMA}}}}


def transcription_models(hub: Hub) -> list[str]:
    return sorted(m for m, (info, workers) in hub.models().items()
                  if "transcription" in served_types(info, workers))


class TranscriptionDialect:
    """The relay's view of a transcription (server/dialect.py): never streamed; the worker's answer
    (protocol/transcription.py's shape) becomes JSON or text/plain in ``response``."""

    usage_kind = "transcribe"

    def whole(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def events(self) -> EventWriter:
        raise UnsupportedOperation("transcriptions are not streamed")

    async def settle(self, answer: dict[str, Any] | None) -> None:
        return None

    def response(self, data: dict[str, Any], headers: dict[str, str]) -> Response:
        """The client's response for a worker's transcription answer (see the rules)."""
        try:
            content, media_type = render(data)
        except AnswerError as exc:
            raise WorkerFailed(f"the worker's transcription answer is malformed: {exc}") from exc
        if isinstance(content, dict):
            return JSONBytesResponse(content, headers=headers)
        return Response(content.encode("utf-8"), media_type=media_type, headers=headers)


@router.post("/audio/transcriptions", summary="Transcribe audio", openapi_extra=_BODY_SCHEMA)
async def create_transcription(request: Request, key: ApiKeyAuth, hub: HubDep, relay: RelayDep,
                               settings: SettingsDep) -> Response:
    if not transcription_models(hub):
        raise UnsupportedOperation("no connected worker serves a transcription model; "
                                   "GET /api/v1/models?type=transcription")
    form = await read_form(request, max_file_bytes=settings.max_audio_bytes)
    audio = next((f for f in form.files if f.field == FILE_FIELD), None)
    for upload in form.files:
        if upload.field != FILE_FIELD:
            raise InvalidRequest(f"unexpected file in form field `{upload.field}`; the audio goes "
                                 f"in `{FILE_FIELD}`", param=upload.field)
    if FILE_FIELD in form.fields or audio is None:
        raise InvalidRequest(f"`{FILE_FIELD}` must be an uploaded audio file (a multipart part "
                             "with a filename)", param=FILE_FIELD)
    if not audio.data:
        raise InvalidRequest(f"the uploaded file `{FILE_FIELD}` is empty", param=FILE_FIELD)
    raw: dict[str, Any] = {}
    for name, values in form.fields.items():
        if name in LIST_FIELDS:
            raw[name] = values
        elif len(values) > 1:
            raise InvalidRequest(f"form field `{name}` was sent {len(values)} times; send it "
                                 "once", param=name)
        else:
            raw[name] = values[0]
    try:
        fields = TranscriptionCreate.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=raw) from exc
    extra = {name: value for name, value in (fields.__pydantic_extra__ or {}).items()}
    job = TranscriptionJob(
        model=fields.model, audio=audio.data, filename=audio.filename or "audio",
        content_type=audio.content_type or "application/octet-stream",
        response_format=fields.response_format or "json", language=fields.language,
        prompt=fields.prompt, temperature=fields.temperature,
        timestamp_granularities=tuple(fields.timestamp_granularities or ()), extra=extra)
    return await relay.respond(request, "transcribe", job_body(job), key.id,
                               TranscriptionDialect())

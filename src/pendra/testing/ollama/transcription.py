"""``POST /v1/audio/transcriptions`` (Ollama v0.20.0+, facts.TRANSCRIPTION_*; reference §6.7).

The multipart form is really parsed (Starlette's parser) and the audio really decoded: the
emulator takes WAV (stdlib ``wave``) and refuses anything else with 400. The transcript is
deterministic — derived from the audio's SHA-256 and length — so a test can tell two files apart.
Before v0.20.0 the route does not exist (Gin's plain ``404 page not found``).
"""

from __future__ import annotations

import hashlib
import io
import wave

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from pendra.testing.ollama.facts import (TRANSCRIPTION_FORMATS, TRANSCRIPTION_MAX_BYTES,
                                         has_transcription)
from pendra.testing.ollama.state import Emulator

_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def openai_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": _TYPES.get(status, "api_error"),
                                   "param": None, "code": None}}, status_code=status)


def transcript(audio: bytes, seconds: float) -> str:
    """What the emulated model "hears": the same bytes always give the same text."""
    return f"Ollama heard {seconds:.2f} seconds ({hashlib.sha256(audio).hexdigest()[:12]})."


async def transcriptions(emu: Emulator, request: Request) -> Response:
    if not has_transcription(emu.settings.version):
        return PlainTextResponse("404 page not found", status_code=404)
    try:
        async with request.form(max_files=2, max_fields=16) as form:
            upload = form.get("file")
            audio = await upload.read() if isinstance(upload, UploadFile) else b""
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    except Exception as exc:  # Starlette's parser refuses a broken form
        return openai_error(400, f"invalid multipart form: {exc}")
    emu.requests[-1]["body"] = {**fields, "file_bytes": len(audio)}
    model = fields.get("model", "")
    if not model:
        return openai_error(400, "model is required")
    spec = emu.find(model)
    if spec is None:
        return openai_error(404, f"model '{model}' not found")
    if "audio" not in spec.capabilities:
        return openai_error(400, f"model '{spec.name}' does not support audio input")
    response_format = fields.get("response_format") or "json"
    if response_format not in TRANSCRIPTION_FORMATS:
        return openai_error(400, f"unsupported response_format '{response_format}'")
    if not isinstance(upload, UploadFile) or not audio:
        return openai_error(400, "file is required")
    if len(audio) > TRANSCRIPTION_MAX_BYTES:
        return openai_error(400, "file is larger than 25 MB")
    try:
        with wave.open(io.BytesIO(audio), "rb") as reader:
            seconds = reader.getnframes() / reader.getframerate()
            reader.readframes(reader.getnframes())
    except (wave.Error, EOFError, ValueError, ZeroDivisionError):
        return openai_error(400, "failed to decode audio")
    text = transcript(audio, seconds)
    if response_format == "text":
        return PlainTextResponse(text)
    return JSONResponse({"text": text})

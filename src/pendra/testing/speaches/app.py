"""The Speaches emulator: Speaches' model management and transcription routes (facts.py), a
``/_emulator/*`` control surface for tests, and its command line.

Emulated: ``GET /health``; ``GET /openapi.json`` (title and version only, plus the paths);
``GET /v1/models`` (``?task=``), ``GET /v1/models/{id}``, ``POST /v1/models/{id}`` (a download from
the emulated registry: blocks for ``download_s`` seconds and answers plain text, 200 downloaded /
201 already there / 404 unknown / 401 gated), ``DELETE /v1/models/{id}``, ``GET /v1/registry``;
``POST /v1/audio/transcriptions`` — a real multipart parse (Starlette's, python-multipart), FastAPI's
422 ``{"detail": [...]}`` for a missing or mistyped field, 404 for a model not installed, the
audio decoded (audio.py: WAV or raw PCM, else 415/400 as Speaches), and the answer in the
requested format with Speaches' media types. FastAPI errors are ``{"detail": "..."}``.

Not emulated: speech synthesis, realtime, VAD, diarization, API keys, streaming transcription
(``stream=true`` is answered 400 here: the emulator has no SSE), translations.

Run: ``python -m pendra.testing.speaches_emulator --port 0`` prints ``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pendra.testing.speaches import audio, facts, impostor

# The emulated Hugging Face registry: Whisper models Speaches can download (id, languages).
REGISTRY: dict[str, list[str]] = {
    "Systran/faster-whisper-tiny.en": ["en"],
    "Systran/faster-whisper-small": ["en", "de", "fr", "cy"],
    "Systran/faster-whisper-large-v3": ["en", "de", "fr", "cy"],
    "Systran/faster-distil-whisper-large-v3": ["en"],
    "deepdml/faster-whisper-large-v3-turbo-ct2": ["en", "de", "fr", "cy"],
    "speaches-ai/Kokoro-82M-v1.0-ONNX": ["en"],  # text-to-speech: listed, never transcribes
    "gated-org/faster-whisper-private": ["en"],  # a gated repository: 401 without HF_TOKEN
}
TTS = {"speaches-ai/Kokoro-82M-v1.0-ONNX"}
GATED = {"gated-org/faster-whisper-private"}


@dataclass
class Settings:
    download_s: float = 0.0  # how long a POST /v1/models/{id} takes
    fail_downloads: bool = False  # answer 500 to every download (a broken Hugging Face mirror)
    transcribe_s: float = 0.0  # how long a transcription takes


@dataclass
class State:
    settings: Settings
    installed: dict[str, int] = field(default_factory=dict)  # id -> created (unix seconds)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def model(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "created": self.installed.get(model_id, 0), "object": "model",
                "owned_by": model_id.split("/")[0], "language": REGISTRY.get(model_id, []),
                "task": "text-to-speech" if model_id in TTS else facts.ASR_TASK}


def detail(status: int, text: str) -> JSONResponse:
    return JSONResponse({"detail": text}, status_code=status)


def validation(errors: list[dict[str, Any]]) -> JSONResponse:
    """FastAPI's request-validation answer."""
    return JSONResponse({"detail": errors}, status_code=422)


def build_app(state: State) -> Starlette:
    async def record(request: Request, **extra: Any) -> None:
        state.requests.append({"method": request.method, "path": request.url.path,
                               "ts": time.time(), **extra})

    async def health(request: Request) -> Response:
        await record(request)
        return JSONResponse(facts.HEALTH_BODY)

    async def openapi(request: Request) -> Response:
        await record(request)
        return JSONResponse({"openapi": "3.1.0",
                             "info": {"title": facts.TITLE, "version": facts.VERSION,
                                      "license": {"name": "MIT License", "identifier": "MIT"}},
                             "paths": {path: {} for path in (
                                 "/health", "/v1/models", "/v1/models/{model_id}",
                                 "/v1/registry", "/v1/audio/transcriptions")}})

    async def list_models(request: Request) -> Response:
        await record(request)
        task = request.query_params.get("task")
        if task is not None and task not in facts.TASKS:
            return validation([{"type": "literal_error", "loc": ["query", "task"],
                                "msg": "Input should be " + _choices(facts.TASKS),
                                "input": task}])
        data = [state.model(m) for m in sorted(state.installed)
                if task is None or state.model(m)["task"] == task]
        return JSONResponse({"data": data, "object": "list"})

    async def registry(request: Request) -> Response:
        await record(request)
        return JSONResponse({"data": [{**state.model(m), "created": 1700000000}
                                      for m in sorted(REGISTRY)], "object": "list"})

    async def one_model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        await record(request, model=model_id)
        if request.method == "GET":
            if model_id not in state.installed:
                return detail(404, facts.not_found(model_id))
            return JSONResponse(state.model(model_id))
        if request.method == "DELETE":
            if model_id not in state.installed:
                return detail(404, facts.repo_not_found(model_id))
            del state.installed[model_id]
            return JSONResponse(facts.deleted(model_id))
        if model_id not in REGISTRY:
            return detail(404, facts.not_found(model_id))
        if model_id in GATED:
            return detail(401, facts.gated(model_id))
        if model_id in state.installed:
            return PlainTextResponse(facts.already_exists(model_id), status_code=201)
        await asyncio.sleep(state.settings.download_s)
        if state.settings.fail_downloads:
            return PlainTextResponse("Internal Server Error", status_code=500)
        state.installed[model_id] = int(time.time())
        return PlainTextResponse(facts.downloaded(model_id), status_code=200)

    async def transcribe(request: Request) -> Response:
        async with request.form(max_files=4, max_fields=64) as form:
            upload = form.get("file")
            data = await upload.read() if isinstance(upload, UploadFile) else b""
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            granularities = [v for v in form.getlist("timestamp_granularities[]")
                             if isinstance(v, str)]
            content_type = upload.content_type if isinstance(upload, UploadFile) else ""
            filename = upload.filename if isinstance(upload, UploadFile) else None
        await record(request, fields=fields, filename=filename, content_type=content_type,
                     audio_bytes=len(data))
        errors = []
        if not isinstance(upload, UploadFile):
            errors.append({"type": "missing", "loc": ["body", "file"], "msg": "Field required",
                           "input": None})
        if not fields.get("model"):
            errors.append({"type": "missing", "loc": ["body", "model"], "msg": "Field required",
                           "input": None})
        response_format = fields.get("response_format", facts.DEFAULT_RESPONSE_FORMAT)
        if response_format not in facts.RESPONSE_FORMATS:
            errors.append({"type": "literal_error", "loc": ["body", "response_format"],
                           "msg": "Input should be " + _choices(facts.RESPONSE_FORMATS),
                           "input": response_format})
        try:
            float(fields.get("temperature", "0"))
        except ValueError:
            errors.append({"type": "float_parsing", "loc": ["body", "temperature"],
                           "msg": "Input should be a valid number, unable to parse string as a "
                                  "number", "input": fields["temperature"]})
        if errors:
            return validation(errors)
        if fields.get("stream", "false").lower() in ("true", "1", "on", "yes"):
            return detail(400, "the emulator does not stream transcriptions")
        model_id = fields["model"]
        if model_id not in state.installed:
            return detail(404, facts.not_installed(model_id))
        if model_id in TTS:
            return detail(404, f"Model '{model_id}' is not supported. If you think this is a "
                               "mistake, please open an issue.")
        try:
            decoded = audio.decode(data, content_type)
        except audio.Undecodable as exc:
            return detail(exc.status, exc.detail)
        await asyncio.sleep(state.settings.transcribe_s)
        found = audio.segments(decoded)
        if response_format in facts.TEXT_MEDIA_TYPES:
            cue = {"srt": facts.srt_cue, "vtt": facts.vtt_cue}.get(response_format)
            body = (audio.text_of(found) if cue is None
                    else "".join(cue(s.text, s.start, s.end, s.id) for s in found))
            return Response(body, media_type=facts.TEXT_MEDIA_TYPES[response_format])
        if response_format == "json":
            return JSONResponse({"text": audio.text_of(found)})
        words = None
        if "word" in granularities:
            words = [{"word": word, "start": s.start, "end": s.end}
                     for s in found for word in s.text.split()]
        return JSONResponse({
            "task": "transcribe", "language": fields.get("language") or "en",
            "duration": round(decoded.duration_s, 3), "text": audio.text_of(found),
            "segments": [{"id": s.id, "seek": 0, "start": s.start, "end": s.end, "text": s.text,
                          "tokens": [50364 + s.id], "temperature": float(
                              fields.get("temperature", "0")), "avg_logprob": -0.25,
                          "compression_ratio": 1.2, "no_speech_prob": 0.01} for s in found],
            "words": words})

    async def control_requests(request: Request) -> Response:
        if request.method == "DELETE":
            state.requests.clear()
            return Response(status_code=204)
        path = request.query_params.get("path")
        return JSONResponse([r for r in state.requests if path is None or r["path"] == path])

    async def control_config(request: Request) -> Response:
        changes = await request.json()
        for key, value in changes.items():
            if not hasattr(state.settings, key):
                return JSONResponse({"error": f"unknown setting {key!r}"}, status_code=400)
            setattr(state.settings, key, value)
        return JSONResponse(state.settings.__dict__)

    async def control_install(request: Request) -> Response:
        model_id = (await request.json())["id"]
        state.installed[model_id] = int(time.time())
        return JSONResponse({"id": model_id}, status_code=201)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return detail(status, "Method Not Allowed" if status == 405 else "Not Found")

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/registry", registry, methods=["GET"]),
        Route("/v1/models/{model_id:path}", one_model, methods=["GET", "POST", "DELETE"]),
        Route("/v1/audio/transcriptions", transcribe, methods=["POST"]),
        Route("/_emulator/requests", control_requests, methods=["GET", "DELETE"]),
        Route("/_emulator/config", control_config, methods=["POST"]),
        Route("/_emulator/models", control_install, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})


def _choices(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Emulate Speaches' HTTP API (for tests).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--models", default="[]",
                        help="JSON list of installed model ids (from the emulated registry)")
    parser.add_argument("--download-s", type=float, default=0.0)
    parser.add_argument("--impostor", action="store_true",
                        help="serve a vLLM-shaped OpenAI server instead (impostor.py)")
    args = parser.parse_args(argv)
    state = State(Settings(download_s=args.download_s))
    for model_id in json.loads(args.models):
        state.installed[model_id] = int(time.time())
    app = impostor.build_app() if args.impostor else build_app(state)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                           access_log=False))

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        print(f"READY http://{args.host}:{sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(serve())
    sys.exit(0)

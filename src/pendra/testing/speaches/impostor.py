"""Not Speaches: an OpenAI-compatible server on Speaches' port, shaped like vLLM's answers (vLLM
also listens on 8000 by default), for checking that discovery tells them apart.

Its answers, from vLLM's OpenAI server (vllm/entrypoints/openai/api_server.py): ``GET /health``
is 200 with an empty body; ``GET /version`` is ``{"version": ...}``; ``GET /v1/models`` lists
``{"id", "object": "model", "created", "owned_by": "vllm", "root", "parent", "max_model_len",
"permission"}`` entries (no ``task``); its OpenAPI title is FastAPI's default, ``FastAPI``; and
``POST /v1/audio/transcriptions`` would transcribe with a Whisper model vLLM was launched with.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MODEL = "openai/whisper-large-v3"


def build_app() -> Starlette:
    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.11.0"})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": MODEL, "object": "model", "created": 1700000000, "owned_by": "vllm",
            "root": MODEL, "parent": None, "max_model_len": 448, "permission": []}]})

    async def openapi(request: Request) -> Response:
        return JSONResponse({"openapi": "3.1.0", "info": {"title": "FastAPI", "version": "0.1.0"},
                             "paths": {}})

    return Starlette(routes=[Route("/health", health), Route("/version", version),
                             Route("/v1/models", models), Route("/openapi.json", openapi)])

"""The emulator's Starlette app (one handler per route, each ``handler(emu, request)``) and its
command line.

Every request to Ollama's routes is recorded before it is answered (after ``latency_s``), and an
``OllamaError`` becomes its ``{"error": …}`` answer. Unknown paths and wrong methods answer Gin's
plain-text ``404 page not found`` / ``405 method not allowed`` (shared/reference/ollama-api.md §1.1).

Run: ``python -m pendra.testing.ollama_emulator --port 0`` prints ``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from pendra.testing.ollama import control, inference, management, transcription
from pendra.testing.ollama.facts import DEFAULT_VERSION
from pendra.testing.ollama.models import DEFAULT_MODELS
from pendra.testing.ollama.state import Emulator, Settings
from pendra.testing.ollama.wire import OllamaError

Handler = Callable[[Emulator, Request], Awaitable[Response]]

# Ollama's routes: (path, handler, methods) (§1.4).
OLLAMA_ROUTES: list[tuple[str, Handler, list[str]]] = [
    ("/", management.root, ["GET", "HEAD"]),
    ("/api/version", management.version, ["GET", "HEAD"]),
    ("/api/tags", management.tags, ["GET", "HEAD"]),
    ("/api/show", management.show, ["POST"]),
    ("/api/ps", management.ps, ["GET"]),
    ("/api/pull", management.pull, ["POST"]),
    ("/api/delete", management.delete, ["DELETE"]),
    ("/api/chat", inference.chat, ["POST"]),
    ("/api/generate", inference.generate, ["POST"]),
    ("/api/embed", inference.embed, ["POST"]),
    ("/api/embeddings", inference.embeddings_legacy, ["POST"]),
    ("/v1/audio/transcriptions", transcription.transcriptions, ["POST"]),
]
CONTROL_ROUTES: list[tuple[str, Handler, list[str]]] = [
    ("/_emulator/requests", control.requests, ["GET", "DELETE"]),
    ("/_emulator/stats", control.stats, ["GET"]),
    ("/_emulator/stats/reset", control.stats_reset, ["POST"]),
    ("/_emulator/config", control.config, ["POST"]),
    ("/_emulator/models", control.add_model, ["POST"]),
    ("/_emulator/models/generate", control.generate_models, ["POST"]),
    ("/_emulator/models/{name:path}", control.remove_model, ["DELETE"]),
]


async def record(emu: Emulator, request: Request) -> None:
    """Remember the request (its JSON body, if any), then wait ``latency_s``."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:  # not JSON (a multipart upload), or not even text
        body = None
    emu.requests.append({"method": request.method, "path": request.url.path, "body": body,
                         "ts": time.time()})
    if emu.settings.latency_s:
        await asyncio.sleep(emu.settings.latency_s)


def ollama_endpoint(emu: Emulator, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        await record(emu, request)
        try:
            return await handler(emu, request)
        except OllamaError as exc:
            return exc.response()
    return endpoint


def control_endpoint(emu: Emulator, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(emu, request)
    return endpoint


def build_app(emu: Emulator) -> Starlette:
    async def not_found(request: Request, exc: Exception) -> Response:
        status = 405 if getattr(exc, "status_code", 404) == 405 else 404
        if not request.url.path.startswith("/_emulator"):
            await record(emu, request)
        return PlainTextResponse("405 method not allowed" if status == 405 else "404 page not found",
                                 status_code=status)

    routes = [Route(path, ollama_endpoint(emu, handler), methods=methods)
              for path, handler, methods in OLLAMA_ROUTES]
    routes += [Route(path, control_endpoint(emu, handler), methods=methods)
               for path, handler, methods in CONTROL_ROUTES]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})


def load_models(choice: str) -> list[dict[str, Any]]:
    """``default``, ``none``, or a path to a JSON list of model specs."""
    if choice == "default":
        return DEFAULT_MODELS
    if choice == "none":
        return []
    loaded: list[dict[str, Any]] = json.loads(Path(choice).read_text())
    return loaded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Emulate Ollama's HTTP API (for tests).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--models", default="default", help="default | none | path to a JSON list")
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--show-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    settings = Settings(version=args.version, token_delay_s=args.token_delay,
                        show_delay_s=args.show_delay)
    app = build_app(Emulator(settings, load_models(args.models)))
    # IPPROTO_TCP, not 0: asyncio turns on TCP_NODELAY only for sockets that say they are TCP, and
    # Ollama (Go's net/http) always has it on; without it every small response waits ~40 ms for a
    # delayed ACK (Nagle), which is not how the real server behaves.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        print(f"READY http://{args.host}:{sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(serve())
    sys.exit(0)

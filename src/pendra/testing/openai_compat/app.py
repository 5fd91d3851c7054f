"""The routes each flavour serves, LM Studio's download jobs, the control surface, the command line.

Every request to a server route is recorded (method, path, JSON body) before it is answered.
Unknown paths answer 404 in the flavour's error shape (vLLM and llama-server are FastAPI/cpp-httplib
servers whose 404 bodies differ in detail; the shape the backends read is what matters).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pendra.testing.openai_compat import core, facts_llamacpp, facts_lmstudio, facts_vllm
from pendra.testing.openai_compat.core import ApiError, Server

FACTS = {"vllm": facts_vllm, "lmstudio": facts_lmstudio, "llamacpp": facts_llamacpp}
Handler = Callable[[Server, Request], Awaitable[Response]]


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON: {exc.msg}", "invalid_request_error") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "invalid_request_error")
    return body


async def models(server: Server, request: Request) -> Response:
    if server.flavour == "vllm":
        data = [facts_vllm.model_card(m, server.created) for m in server.models]
    elif server.flavour == "llamacpp":
        data = [facts_llamacpp.model_entry(m, server.created) for m in server.models]
    else:
        data = [{"id": m["id"], "object": "model", "owned_by": "organization_owner"}
                for m in server.models]
    return JSONResponse({"object": "list", "data": data})


async def chat(server: Server, request: Request) -> Response:
    return await core.chat(server, await _body(request))


async def embeddings(server: Server, request: Request) -> Response:
    return await core.embeddings(server, await _body(request))


async def vllm_version(server: Server, request: Request) -> Response:
    return JSONResponse({"version": facts_vllm.VERSION})


async def health(server: Server, request: Request) -> Response:
    if server.flavour == "llamacpp":
        return JSONResponse({"status": "ok"})
    return Response(status_code=200)


async def lms_v1_models(server: Server, request: Request) -> Response:
    return JSONResponse({"models": [facts_lmstudio.v1_entry(m) for m in server.models]})


async def lms_v0_models(server: Server, request: Request) -> Response:
    return JSONResponse({"object": "list",
                         "data": [facts_lmstudio.v0_entry(m) for m in server.models]})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _job_view(server: Server, job: dict[str, Any]) -> dict[str, Any]:
    """A job as LM Studio reports it now; finishing a download adds its model to the list."""
    now = time.time()
    total = job["total_size_bytes"]
    if job["status"] == "downloading":
        done = min(total, int((now - job["started"]) * server.download_bytes_per_s))
        if server.fail_downloads and done >= total // 2:
            job["status"] = "failed"
            job["downloaded_bytes"] = total // 2
        elif done >= total:
            job.update(status="completed", downloaded_bytes=total, completed_at=_iso(now))
            spec = dict(job["spec"], id=job["model"])
            if not any(m["id"] == spec["id"] for m in server.models):
                server.models.append(spec)
        else:
            job["downloaded_bytes"] = done
    view = {"job_id": job["job_id"], "status": job["status"], "total_size_bytes": total,
            "downloaded_bytes": job["downloaded_bytes"], "started_at": _iso(job["started"])}
    if job["status"] == "downloading":
        rate = server.download_bytes_per_s
        view["bytes_per_second"] = rate
        view["estimated_completion"] = _iso(job["started"] + total / rate)
    if job["status"] == "completed":
        view["completed_at"] = job["completed_at"]
    return view


async def lms_download(server: Server, request: Request) -> Response:
    body = await _body(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required", "invalid_request_error", "model")
    quantization = body.get("quantization")
    spec = facts_lmstudio.DOWNLOADABLE.get(model)
    if model.startswith(facts_lmstudio.HUGGING_FACE):
        spec = facts_lmstudio.from_hugging_face(model, quantization)
    elif quantization is not None:
        raise ApiError(400, facts_lmstudio.QUANTIZATION_ONLY_FOR_LINKS, "invalid_request_error",
                       "quantization")
    key = spec["id"] if spec is not None and "id" in spec else model
    if any(m["id"] == key for m in server.models):
        return JSONResponse({"status": "already_downloaded"})
    if spec is None:
        raise ApiError(404, facts_lmstudio.NOT_FOUND.format(model=model), "invalid_request_error",
                       "model")
    job = {"job_id": "job_" + secrets.token_hex(5), "model": key, "spec": spec,
           "status": "downloading",
           "total_size_bytes": spec["size_bytes"], "downloaded_bytes": 0, "started": time.time()}
    server.jobs[job["job_id"]] = job
    view = _job_view(server, job)
    view.pop("downloaded_bytes", None)  # the start answer has no downloaded_bytes (docs)
    return JSONResponse(view)


async def lms_download_status(server: Server, request: Request) -> Response:
    job = server.jobs.get(request.path_params["job_id"])
    if job is None:
        raise ApiError(404, f"No download job with id {request.path_params['job_id']}",
                       "invalid_request_error", "job_id")
    return JSONResponse(_job_view(server, job))


COMMON: list[tuple[str, Handler, list[str]]] = [
    ("/v1/models", models, ["GET"]),
    ("/v1/chat/completions", chat, ["POST"]),
    ("/v1/embeddings", embeddings, ["POST"]),
    ("/health", health, ["GET"]),
]
ROUTES: dict[str, list[tuple[str, Handler, list[str]]]] = {
    "vllm": [("/version", vllm_version, ["GET"])],
    "llamacpp": [],
    "lmstudio": [("/api/v1/models", lms_v1_models, ["GET"]),
                 ("/api/v0/models", lms_v0_models, ["GET"]),
                 ("/api/v1/models/download", lms_download, ["POST"]),
                 ("/api/v1/models/download/status/{job_id}", lms_download_status, ["GET"])],
}


# --- control surface ---------------------------------------------------------------------------------

async def control_requests(server: Server, request: Request) -> Response:
    if request.method == "DELETE":
        server.requests.clear()
        return JSONResponse({})
    path = request.query_params.get("path")
    return JSONResponse([r for r in server.requests if path is None or r["path"] == path])


async def control_config(server: Server, request: Request) -> Response:
    body = await request.json()
    for name in ("token_delay_s", "download_bytes_per_s", "fail_downloads"):
        if name in body:
            setattr(server, name, body[name])
    return JSONResponse({})


async def control_add_model(server: Server, request: Request) -> Response:
    spec = await request.json()
    server.models = [m for m in server.models if m["id"] != spec["id"]] + [spec]
    return JSONResponse({})


async def control_remove_model(server: Server, request: Request) -> Response:
    server.models = [m for m in server.models if m["id"] != request.path_params["name"]]
    return JSONResponse({})


CONTROL: list[tuple[str, Handler, list[str]]] = [
    ("/_emulator/requests", control_requests, ["GET", "DELETE"]),
    ("/_emulator/config", control_config, ["POST"]),
    ("/_emulator/models", control_add_model, ["POST"]),
    ("/_emulator/models/{name:path}", control_remove_model, ["DELETE"]),
]


def build_app(server: Server, *, rest_v1: bool = True) -> Starlette:
    def wrap(handler: Handler, record: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if record:
                raw = await request.body()
                try:
                    body = json.loads(raw) if raw.strip() else None
                except json.JSONDecodeError:
                    body = None
                server.requests.append({"method": request.method, "path": request.url.path,
                                        "body": body})
            if record and server.api_key and request.url.path.startswith(
                    server.facts.API_KEY_GUARDS) and \
                    request.headers.get("authorization") != f"Bearer {server.api_key}":
                return JSONResponse(server.facts.UNAUTHORIZED, status_code=401)
            try:
                return await handler(server, request)
            except ApiError as exc:
                return server.error(exc)
        return endpoint

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return server.error(ApiError(status, "Not Found" if status == 404 else
                                     "Method Not Allowed", "NotFoundError"))

    flavour_routes = [r for r in ROUTES[server.flavour]
                      if rest_v1 or not r[0].startswith("/api/v1/")]
    routes = [Route(path, wrap(handler, True), methods=methods)
              for path, handler, methods in COMMON + flavour_routes]
    routes += [Route(path, wrap(handler, False), methods=methods)
               for path, handler, methods in CONTROL]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Emulate an OpenAI-compatible server (for tests).")
    parser.add_argument("--flavour", choices=sorted(FACTS), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--models", default="default", help="default | none | path to JSON list")
    parser.add_argument("--no-rest-v1", action="store_true",
                        help="LM Studio before 0.4: only the REST API v0")
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--api-key", default="", help="require this bearer key (vLLM --api-key)")
    args = parser.parse_args(argv)
    facts = FACTS[args.flavour]
    chosen = (facts.DEFAULT_MODELS if args.models == "default" else [] if args.models == "none"
              else json.loads(Path(args.models).read_text()))
    server = Server(args.flavour, facts, [dict(m) for m in chosen], token_delay_s=args.token_delay,
                    api_key=args.api_key)
    app = build_app(server, rest_v1=not args.no_rest_v1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))

    async def serve() -> None:
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        while not uv.started and not task.done():
            await asyncio.sleep(0.01)
        print(f"READY http://{args.host}:{sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(serve())
    sys.exit(0)

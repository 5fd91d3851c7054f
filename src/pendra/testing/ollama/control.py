"""The ``/_emulator/*`` control surface: never part of Ollama's API, never used by real clients.
Tests and benches inspect what the emulator received (``requests``, ``stats``) and steer it
(``config``, ``models``) through it; ``servers.EmulatorProcess`` wraps each route in a method.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pendra.testing.ollama.models import ModelSpec
from pendra.testing.ollama.state import Emulator


async def requests(emu: Emulator, request: Request) -> Response:
    """GET: the recorded requests (``?path=`` filters); DELETE: forget them."""
    if request.method == "DELETE":
        emu.requests.clear()
        return Response(status_code=204)
    path = request.query_params.get("path")
    return JSONResponse([r for r in emu.requests if path is None or r["path"] == path])


async def stats(emu: Emulator, request: Request) -> Response:
    return JSONResponse(emu.stats())


async def stats_reset(emu: Emulator, request: Request) -> Response:
    emu.reset_stats()
    return Response(status_code=204)


async def config(emu: Emulator, request: Request) -> Response:
    """Change ``Settings`` fields; an unknown one is a 400 and changes nothing after it."""
    changes = await request.json()
    for key, value in changes.items():
        if not hasattr(emu.settings, key):
            return JSONResponse({"error": f"unknown setting {key!r}"}, status_code=400)
        setattr(emu.settings, key, value)
    return JSONResponse(emu.settings.__dict__)


async def add_model(emu: Emulator, request: Request) -> Response:
    spec = ModelSpec.from_dict(await request.json())
    emu.add(spec)
    return JSONResponse({"name": spec.name}, status_code=201)


async def generate_models(emu: Emulator, request: Request) -> Response:
    """Install ``count`` synthetic models (discovery benches)."""
    count = int((await request.json()).get("count", 1))
    for i in range(count):
        emu.add(ModelSpec.from_dict({"name": f"synthetic-{i:04d}:latest", "family": "llama",
                                     "parameter_size": "1B", "context_length": 8192,
                                     "size": 700_000_000 + i}))
    return JSONResponse({"added": count}, status_code=201)


async def remove_model(emu: Emulator, request: Request) -> Response:
    spec = emu.find(request.path_params["name"])
    if spec is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    emu.remove(spec)
    return Response(status_code=204)

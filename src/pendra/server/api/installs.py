"""Installs and removals of catalogue models on workers (starting, cancelling and removing are
owner-only; any console user or the admin token may watch them).

``POST /installs`` starts (or attaches to) an install, ``GET /installs/{id}/events`` streams its
progress as server-sent events (a snapshot first, then every change, then the final state, with
``sse``'s keep-alive comments while it is quiet),
``POST /installs/{id}/cancel`` stops it, and ``DELETE /workers/{worker}/models/{model}`` removes an
installed model from the backend of that worker serving it (where that backend allows it). Each
accepted start, cancel and removal leaves an audit row (written once the installs service accepted
it: the install itself runs on a worker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pendra.server import sse
from pendra.server.admin_auth import Admin
from pendra.server.deps import InstallsDep as InstallService
from pendra.server.deps import StoreDep
from pendra.server.roles import require_owner
from pendra.server.store import audit

router = APIRouter(tags=["installs"])


class InstallCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200,
                       description="Catalogue id, `id:variant`, or a variant's Ollama tag")
    variant: str | None = Field(default=None, max_length=100)
    worker: str = Field(min_length=1, max_length=200, description="Worker id or name")
    backend: str | None = Field(default=None, min_length=1, max_length=32,
                                pattern=r"^[a-z0-9_-]+$",
                                description="Target backend (ollama, lmstudio); default: the "
                                            "first of the worker's backends the model installs into")


@router.post("/installs", status_code=202)
async def create_install(body: InstallCreate, installs: InstallService, store: StoreDep,
                         admin: Admin) -> dict[str, Any]:
    require_owner(admin, "install models")
    snapshot = await installs.start(body.model, body.variant, body.worker,
                                    requested_by=admin.name, backend=body.backend)
    await store.change(lambda db: audit.record(
        db, admin, "model.install_requested", f"{snapshot.model_tag} on {snapshot.worker_name}",
        snapshot.id))
    return snapshot.to_dict()


@router.get("/installs")
async def list_installs(installs: InstallService, _: Admin,
                        worker: str | None = None) -> dict[str, Any]:
    return {"object": "list", "data": [s.to_dict() for s in await installs.list(worker=worker)]}


@router.get("/installs/{op_id}")
async def get_install(op_id: str, installs: InstallService, _: Admin) -> dict[str, Any]:
    return (await installs.get(op_id)).to_dict()


@router.get("/installs/{op_id}/events")
async def install_events(op_id: str, installs: InstallService, _: Admin) -> StreamingResponse:
    first = await installs.get(op_id)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        async for snapshot in installs.watch(first.id):
            yield sse.event(snapshot.to_dict(), "end" if snapshot.done else "progress")

    return sse.response(events())


@router.post("/installs/{op_id}/cancel")
async def cancel_install(op_id: str, installs: InstallService, store: StoreDep,
                         admin: Admin) -> dict[str, Any]:
    require_owner(admin, "cancel installs")
    snapshot = await installs.cancel(op_id)
    await store.change(lambda db: audit.record(
        db, admin, "model.install_cancelled", f"{snapshot.model_tag} on {snapshot.worker_name}",
        snapshot.id))
    return snapshot.to_dict()


@router.delete("/workers/{worker}/models/{model:path}", status_code=204)
async def remove_model(worker: str, model: str, installs: InstallService, store: StoreDep,
                       admin: Admin) -> Response:
    require_owner(admin, "remove models")
    await installs.remove(worker, model)
    await store.change(lambda db: audit.record(db, admin, "model.remove_requested",
                                               f"{model} on {worker}"))
    return Response(status_code=204)

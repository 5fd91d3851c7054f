"""``GET /status``: what the control plane sees now, for ``pendra status`` and ``workers list``.

Needs an API key, or the per-start admin token the local CLI reads from server.yaml.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pendra.server.auth import StatusReader
from pendra.server.deps import HubDep, RouterDep
from pendra.server.hub import Hub, WorkerView
from pendra.server.routing import Router

router = APIRouter(tags=["status"])


def worker_status(view: WorkerView) -> dict[str, Any]:
    return {"id": view.id, "name": view.name, "connected_at": view.connected_at.isoformat(),
            "last_seen": view.last_seen.isoformat(), "max_concurrent": view.max_concurrent,
            "in_flight": view.in_flight, "software_version": view.software_version,
            "backends": [b.to_dict() for b in view.backends], "models": sorted(view.models)}


def fleet_status(hub: Hub, routing: Router) -> dict[str, Any]:
    workers = sorted(hub.connected(), key=lambda w: w.name)
    return {"workers": [worker_status(w) for w in workers], "models": sorted(hub.models()),
            "waiting_requests": routing.waiting}


@router.get("/status", summary="Connected workers, their load, backends and models")
async def get_status(_: StatusReader, hub: HubDep, routing: RouterDep) -> dict[str, Any]:
    return fleet_status(hub, routing)

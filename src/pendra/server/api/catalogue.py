"""``GET /catalogue``: the curated models Pendra can install (public, no key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pendra.server.deps import CatalogueDep

router = APIRouter(tags=["catalogue"])


@router.get("/catalogue", summary="The curated, installable catalogue (no key needed)")
async def list_catalogue(catalogue: CatalogueDep) -> dict[str, Any]:
    return {"object": "list", "data": catalogue.public()}

"""``POST /images/generations``: OpenAI image generation on a worker serving an image model."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pendra.server.api.media_schema import ImageCreate
from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import RelayDep

router = APIRouter(tags=["inference"])


@router.post("/images/generations", summary="Generate images")
async def create_image(body: ImageCreate, request: Request, key: ApiKeyAuth,
                       relay: RelayDep) -> Response:
    return await relay.respond(request, "image", body.to_worker(), key.id)

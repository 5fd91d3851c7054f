"""``POST /images/generations``: OpenAI image generation on a worker serving an image model."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import RelayDep

router = APIRouter(tags=["inference"])


class ImageCreate(BaseModel):
    """OpenAI's image request; other fields (``response_format``, …) pass through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="An image model: GET /models?type=image")
    prompt: str = Field(min_length=1)
    size: str | None = Field(default=None, description="e.g. 1024x1024; the model decides")
    n: int | None = Field(default=None, ge=1, le=10)


@router.post("/images/generations", summary="Generate images")
async def create_image(body: ImageCreate, request: Request, key: ApiKeyAuth,
                       relay: RelayDep) -> Response:
    return await relay.respond(request, "image", body.model_dump(exclude_unset=True), key.id)

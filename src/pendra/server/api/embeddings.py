"""``POST /embeddings``: OpenAI embeddings on a worker serving an embedding model."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import RelayDep

router = APIRouter(tags=["inference"])


class EmbeddingCreate(BaseModel):
    """OpenAI's embeddings request; other fields (``encoding_format``, …) pass through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="An embedding model: GET /models?type=embedding")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="Text (or token arrays) to embed; one vector per item, in order")


@router.post("/embeddings", summary="Create embeddings")
async def create_embeddings(body: EmbeddingCreate, request: Request, key: ApiKeyAuth,
                            relay: RelayDep) -> Response:
    return await relay.respond(request, "embed", body.model_dump(exclude_unset=True), key.id)

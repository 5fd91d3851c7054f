"""``POST /embeddings``: OpenAI embeddings on a worker serving an embedding model."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pendra.server.api.media_schema import EmbeddingCreate
from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import RelayDep

router = APIRouter(tags=["inference"])


@router.post("/embeddings", summary="Create embeddings")
async def create_embeddings(body: EmbeddingCreate, request: Request, key: ApiKeyAuth,
                            relay: RelayDep) -> Response:
    return await relay.respond(request, "embed", body.to_worker(), key.id)

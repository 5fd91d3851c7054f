"""``POST /completions``: OpenAI's legacy text completions (no chat template), streamed as SSE or
returned whole, on a worker that speaks protocol version 4 (the ``complete`` request kind)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pendra.server.api.completions_schema import CompletionCreate
from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import RelayDep
from pendra.server.dialect import OpenAIPassThrough

router = APIRouter(tags=["inference"])

# The answer is already OpenAI's text_completion; only the usage rows' kind is this dialect's.
DIALECT = OpenAIPassThrough("completions")


@router.post("/completions", summary="Create a text completion",
             responses={200: {"description": "A text_completion, or SSE text_completion events "
                                             "ending with `data: [DONE]`"}})
async def create_completion(body: CompletionCreate, request: Request, key: ApiKeyAuth,
                            relay: RelayDep) -> Response:
    return await relay.respond(request, "complete", body.to_worker(), key.id, DIALECT)

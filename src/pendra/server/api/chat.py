"""``POST /chat/completions``: OpenAI chat, streamed as SSE or returned whole, on a worker."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pendra.server.api.chat_schema import ChatCompletionCreate
from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import RelayDep

router = APIRouter(tags=["inference"])


@router.post("/chat/completions", summary="Create a chat completion",
             responses={200: {"description": "A chat.completion, or SSE chat.completion.chunk "
                                             "events ending with `data: [DONE]`"}})
async def create_chat_completion(body: ChatCompletionCreate, request: Request, key: ApiKeyAuth,
                                 relay: RelayDep) -> Response:
    return await relay.respond(request, "chat", body.to_worker(), key.id)

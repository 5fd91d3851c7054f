"""``POST /chat/completions``: OpenAI chat, streamed as SSE or returned whole, on a worker."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import RelayDep

router = APIRouter(tags=["inference"])


class ChatCompletionCreate(BaseModel):
    """OpenAI's chat request. Only ``model`` and ``messages`` are checked here; every other field
    (``tools``, ``response_format``, Ollama's ``options``, …) reaches the worker unchanged."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="A model id from GET /models")
    messages: list[dict[str, Any]] = Field(min_length=1,
                                           description="The conversation, oldest first")
    stream: bool = Field(default=False, description="Answer as server-sent events")


@router.post("/chat/completions", summary="Create a chat completion",
             responses={200: {"description": "A chat.completion, or SSE chat.completion.chunk "
                                             "events ending with `data: [DONE]`"}})
async def create_chat_completion(body: ChatCompletionCreate, request: Request, key: ApiKeyAuth,
                                 relay: RelayDep) -> Response:
    return await relay.respond(request, "chat", body.model_dump(exclude_unset=True), key.id)

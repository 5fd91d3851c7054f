"""``POST /messages`` and ``POST /messages/count_tokens``: Anthropic's Messages API on a worker.

Rules:
- Authentication is the API's own (``x-api-key`` or ``Authorization: Bearer``);
  ``anthropic-version`` and ``anthropic-beta`` are accepted and ignored.
- The body is checked by schema.py, translated by translate.py into the internal chat body and
  relayed exactly as a chat is (routing, retries, ``num_ctx``, usage rows, cancellation on
  disconnect); events.py shapes the answer.
- Answers carry Anthropic's ``request-id`` header beside ``X-Request-Id`` (the same id).
- ``count_tokens`` asks the model's own backend: the same prompt with one token generated, whose
  ``prompt_eval_count`` is the answer. It never estimates.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pendra.server.api.anthropic.events import Messages, TokenCount
from pendra.server.api.anthropic.schema import CountTokens, MessageCreate
from pendra.server.api.anthropic.translate import chat_body, count_body
from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import RelayDep
from pendra.server.errors import request_id_of

router = APIRouter(tags=["anthropic"])
REQUEST_ID = "request-id"


@router.post("/messages", summary="Create a message (Anthropic Messages API)",
             responses={200: {"description": "An Anthropic message, or its SSE event stream "
                                             "(message_start … message_stop)"}})
async def create_message(body: MessageCreate, request: Request, key: ApiKeyAuth,
                         relay: RelayDep) -> Response:
    request_id = request_id_of(request.scope)
    response = await relay.respond(request, "chat", chat_body(body), key.id,
                                   Messages(body.model, request_id))
    return _with_request_id(response, request_id)


@router.post("/messages/count_tokens", summary="Count a message's input tokens",
             responses={200: {"description": "`{\"input_tokens\": N}` as the model's backend "
                                             "counted the prompt"}})
async def count_tokens(body: CountTokens, request: Request, key: ApiKeyAuth,
                       relay: RelayDep) -> Response:
    response = await relay.respond(request, "chat", count_body(body), key.id, TokenCount())
    return _with_request_id(response, request_id_of(request.scope))


def _with_request_id(response: Response, request_id: str) -> Response:
    # Anthropic's SDKs read the id from ``request-id`` (``message._request_id``); errors carry it
    # in the body's ``request_id``, and every response in ``X-Request-Id``.
    if request_id:
        response.headers[REQUEST_ID] = request_id
    return response

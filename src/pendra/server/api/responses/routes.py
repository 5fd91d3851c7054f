"""``/responses``: create a response on a worker, and read, list the input of, or delete a stored
one.

Rules:
- ``POST /responses`` translates the request (translate.py) into the internal chat body and hands
  the relay a ``ResponsesDialect``: routing, retries, metering (usage kind ``responses``),
  cancellation on client disconnect and the worker headers are the relay's, exactly as for chat.
- ``previous_response_id`` must name a live stored response of the same API key (404 with
  ``param: previous_response_id`` otherwise); its conversation (its input items and its output)
  comes before this request's input. Its ``instructions`` are not carried over (OpenAI's rule).
  The conversation so made is held to the body limit a client sending it whole would meet
  (``max_body_bytes``; 413 naming ``previous_response_id``), so a long chain can never make a
  request bigger than any client could send, nor a frame a worker would refuse.
- ``GET``/``DELETE /responses/{id}`` and ``GET /responses/{id}/input_items`` see only the calling
  key's live responses; anything else is 404, whether it never existed, expired, or belongs to
  another key.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from pendra.errors import NotFound, PayloadTooLarge
from pendra.server import client_json
from pendra.server.api.responses import tools, translate
from pendra.server.api.responses.dialect import ResponsesDialect
from pendra.server.api.responses.events import Turn
from pendra.server.api.responses.schema import MAX_ID_CHARS, ResponseCreate
from pendra.server.auth import ApiKeyAuth
from pendra.server.deps import RelayDep, SettingsDep, StoreDep
from pendra.server.store import responses as stored
from pendra.server.store.db import Store

router = APIRouter(tags=["inference"])

ResponseId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)]


async def _kept(store: Store, response_id: str, key_id: str,
                param: str | None = None) -> stored.Kept:
    async with store.session() as session:
        kept = await stored.get_response(session, response_id, key_id)
    if kept is None:
        what = "previous response" if param else "response"
        raise NotFound(f"{what} {response_id!r} not found: it was not stored (store: false), "
                       "has expired, was deleted, or belongs to another API key", param=param,
                       code="previous_response_not_found" if param else "not_found")
    return kept


@router.post("/responses", summary="Create a response (OpenAI Responses API)",
             responses={200: {"description": "A Response, or SSE events from response.created "
                                             "to response.completed"}})
async def create_response(body: ResponseCreate, request: Request, key: ApiKeyAuth,
                          relay: RelayDep, store: StoreDep, settings: SettingsDep) -> Response:
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        kept = await _kept(store, body.previous_response_id, key.id, "previous_response_id")
        history = [*kept.input_items, *kept.response.get("output", [])]
    items = translate.with_ids(translate.input_items(body.input))
    offered = tools.tool_map(body.tools)
    chat = translate.chat_body(body, history, items, offered)
    if history and len(client_json.dumps(chat)) > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"the conversation of previous response {body.previous_response_id!r} with this input "
            f"is larger than the request limit of {settings.max_body_bytes} bytes; start a new "
            "conversation (or send a shorter history as input)", param="previous_response_id")
    turn = Turn(translate.new_id("resp"), int(time.time()), body.echo(), body.model, offered)
    dialect = ResponsesDialect(turn, conversation=[*history, *items],
                               store=store if body.store else None, key_id=key.id,
                               retention_s=settings.responses_retention_s)
    return await relay.respond(request, "chat", chat, key.id, dialect)


@router.get("/responses/{response_id}", summary="Retrieve a stored response")
async def get_response(response_id: ResponseId, key: ApiKeyAuth,
                       store: StoreDep) -> dict[str, Any]:
    return (await _kept(store, response_id, key.id)).response


@router.delete("/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: ResponseId, key: ApiKeyAuth,
                          store: StoreDep) -> dict[str, Any]:
    if not await store.change(lambda s: stored.delete_response(s, response_id, key.id)):
        await _kept(store, response_id, key.id)  # raises the same 404 as a read
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/responses/{response_id}/input_items",
            summary="The input items of a stored response (its whole conversation)")
async def list_input_items(response_id: ResponseId, key: ApiKeyAuth, store: StoreDep,
                           limit: Annotated[int, Query(ge=1, le=100)] = 20,
                           order: Literal["asc", "desc"] = "desc",
                           after: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
                           ) -> dict[str, Any]:
    items = (await _kept(store, response_id, key.id)).input_items
    if order == "desc":
        items = items[::-1]
    if after is not None:
        at = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if at is None:
            raise NotFound(f"no input item {after!r} in response {response_id!r}",
                           param="after")
        items = items[at + 1:]
    page = items[:limit]
    return {"object": "list", "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}

"""The control plane's two pure-ASGI middlewares (BaseHTTPMiddleware would buffer streams).

- ``RequestIdMiddleware`` gives every HTTP request an id: a sane incoming ``X-Request-Id`` is kept,
  anything else is replaced by ``req_<hex>``. The id goes into ``scope["state"]["request_id"]``
  (``request.state.request_id``) and onto every response that passes through, errors and 404s
  included. It is also set in ``pendra.logs.REQUEST_ID`` for the request's task, so every log
  line written while serving the request carries it (not reset on the way out: each request runs
  in its own task, and the server's own line about an exception that escaped the app, written
  after the app returns, should carry the id too).
- ``BodyLimitMiddleware`` refuses bodies over ``max_body_bytes`` with 413: by ``Content-Length``
  before a byte is read, or, for a chunked body, as soon as the running count passes the limit.
  Whatever the app makes of the interrupted read (our handler answers 413 itself; FastAPI's own
  body parsing turns any read error into a 400), the response the client sees is the 413.
"""

from __future__ import annotations

import json
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pendra.errors import PayloadTooLarge
from pendra.logs import REQUEST_ID
from pendra.server.errors import REQUEST_ID_HEADER, request_id_of, shaped_error_body

# What an incoming request id may look like; anything else (too long, odd characters) is replaced
# so a client cannot inject text into our logs or headers.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HEADER = REQUEST_ID_HEADER.lower().encode()


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == _HEADER), b"").decode("latin-1")
        request_id = incoming if REQUEST_ID_PATTERN.match(incoming) else new_request_id()
        # Mutated in place: the error handlers (some run outside this middleware) read the same dict.
        scope.setdefault("state", {})["request_id"] = request_id
        REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER]
                headers.append((_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is larger than the limit of {self.max_body_bytes} "
                               "bytes (max_body_bytes)")

    async def _refuse(self, scope: Scope, send: Send) -> None:
        request_id = request_id_of(scope)
        body = json.dumps(shaped_error_body(scope.get("path", ""), 413, self._error().message,
                                            PayloadTooLarge.kind, request_id)).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        if request_id:
            headers.append((_HEADER, request_id.encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._refuse(scope, send)
            return
        seen = 0
        over = False
        replaced = False

        async def counted_receive() -> Message:
            nonlocal seen, over
            if over:
                raise self._error()
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    over = True
                    raise self._error()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if over and not replaced and message["type"] == "http.response.start":
                if message["status"] != 413:
                    replaced = True
                    await self._refuse(scope, send)
                    return
            if replaced:
                return  # the app's own answer to the broken read; the client already has the 413
            await send(message)

        await self.app(scope, counted_receive, guarded_send)

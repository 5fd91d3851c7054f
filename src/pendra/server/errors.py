"""The one place where errors become HTTP responses.

Rules:
- Every ``PendraError`` maps to its own ``.status``, ``.kind``, ``.param`` and ``.code``;
  FastAPI's validation errors are 400 ``invalid_request_error`` with ``param`` naming the field as
  the client wrote it (``messages[0].content``, ``options.num_ctx``); Starlette's 404/405 keep their
  status with a message that says what was asked for; anything else is a 500 that is logged with
  its traceback and says only "internal error" to the client.
- The body is OpenAI's error envelope plus Pendra's documented ``detail``::

      {"error": {"message", "type": <kind>, "param": <field or null>, "code": <code or null>},
       "detail": <message>}

- A dialect whose clients expect another error envelope (Anthropic's ``{"type": "error", ...}``)
  registers an ``ErrorShape`` for its paths (``register_error_shape``); every error answered on
  those paths (validation, authentication, routing, body limit, 500) takes that shape. Everywhere
  else the OpenAI envelope above. A shape may come with a ``StatusMap`` when the dialect answers
  some condition with its own status (Anthropic's 529 for an overloaded service).
- Every error response carries ``X-Request-Id``; an error with a retry hint (``retry_after_s``:
  ``NoCapacity`` and its 503s, a throttled sign-in's 429, a key's rate limit) carries
  ``Retry-After``, and an error with ``headers`` (a rate limit's ``x-ratelimit-*``) carries them; an
  error that names a worker (``worker_id``/``worker_name`` attributes: ``WorkerFailed``,
  ``WorkerGone``, a worker's own refusal) carries ``X-Worker-Id``/``X-Worker-Name`` and its message
  names the worker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from pendra.errors import PendraError

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_KIND_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error",
                   403: "permission_error", 404: "not_found_error", 405: "method_not_allowed",
                   413: "payload_too_large", 429: "rate_limit_error"}


def request_id_of(scope: Scope) -> str:
    """The id the request-id middleware gave this request ("" outside it)."""
    state = scope.get("state") or {}
    return str(state.get("request_id", ""))


def _encodable(text: str) -> str:
    # A message may quote the client's text: make sure it can be encoded (no lone surrogates).
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(message: str, kind: str, *, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope (plus ``detail``)."""
    message = _encodable(message)
    if param is not None:
        param = _encodable(param)
    return {"error": {"message": message, "type": kind, "param": param, "code": code},
            "detail": message}


# (status, message, kind, param, code, request id) -> the body of an error response.
ErrorShape = Callable[[int, str, str, str | None, str | None, str], dict[str, Any]]
# (status, kind) -> the status a dialect answers that error with.
StatusMap = Callable[[int, str], int]
_SHAPES: dict[str, ErrorShape] = {}
_STATUSES: dict[str, StatusMap] = {}


def register_error_shape(path: str, shape: ErrorShape, status: StatusMap | None = None) -> None:
    """Errors answered on ``path`` and below it (``path/...``) take ``shape`` (and, with
    ``status``, the status it maps them to)."""
    _SHAPES[path.rstrip("/")] = shape
    if status is not None:
        _STATUSES[path.rstrip("/")] = status


def _status_for(path: str, status: int, kind: str) -> int:
    while path and _STATUSES:
        if (mapped := _STATUSES.get(path)) is not None:
            return mapped(status, kind)
        path = path.rpartition("/")[0]
    return status


def shape_for(path: str) -> ErrorShape | None:
    """The error shape registered for ``path`` (or a parent of it), if any."""
    while path:
        shape = _SHAPES.get(path)
        if shape is not None:
            return shape
        path = path.rpartition("/")[0]
    return None


def shaped_error_body(path: str, status: int, message: str, kind: str, request_id: str = "", *,
                      param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The body of an error answered on ``path``: its dialect's shape, or OpenAI's."""
    shape = shape_for(path) if _SHAPES else None
    if shape is None:
        return error_body(message, kind, param=param, code=code)
    return shape(status, _encodable(message), kind, None if param is None else _encodable(param),
                 code, request_id)


def worker_headers(worker_id: str, worker_name: str) -> dict[str, str]:
    """X-Worker-Id/Name naming the worker that answered (or failed)."""
    headers = {}
    if worker_id:
        headers["X-Worker-Id"] = _header_safe(worker_id)
    if worker_name:
        headers["X-Worker-Name"] = _header_safe(worker_name)
    return headers


def _header_safe(value: str) -> str:
    # Worker names are printable but may be non-ASCII; headers must be latin-1.
    return value.encode("latin-1", "replace").decode("latin-1")


def error_response(status: int, message: str, kind: str, request_id: str,
                   headers: dict[str, str] | None = None, *, param: str | None = None,
                   code: str | None = None, path: str = "") -> JSONResponse:
    all_headers = dict(headers or {})
    if request_id:
        all_headers[REQUEST_ID_HEADER] = request_id
    status = _status_for(path, status, kind)
    body = shaped_error_body(path, status, message, kind, request_id, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=all_headers)


def retry_after(exc: PendraError) -> dict[str, str]:
    """``Retry-After`` for an error that carries a retry hint: whole seconds, at least 1."""
    if exc.retry_after_s is None:
        return {}
    return {"Retry-After": str(max(math.ceil(exc.retry_after_s), 1))}


def pendra_error_response(exc: PendraError, request_id: str, path: str = "") -> JSONResponse:
    worker_id = getattr(exc, "worker_id", "") or ""
    worker_name = getattr(exc, "worker_name", "") or ""
    headers = worker_headers(worker_id, worker_name)
    message = exc.message
    name = worker_name or worker_id
    if name and name not in message:
        message = f"{message} (worker '{name}')"
    headers.update(retry_after(exc))
    headers.update(getattr(exc, "headers", None) or {})  # e.g. a rate limit's x-ratelimit-*
    return error_response(exc.status, message, exc.kind, request_id, headers, param=exc.param,
                          code=exc.code, path=path)


async def _pendra_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PendraError)
    if exc.status >= 500:
        log.warning("request %s failed: %s: %s", request_id_of(request.scope), exc.kind,
                    exc.message)
    return pendra_error_response(exc, request_id_of(request.scope), request.url.path)


# Labels pydantic puts in an error's location for the member of a union that was tried.
_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "literal"})
# A body that breaks many rules at once is named by this many of its problems at most.
MAX_PROBLEMS_NAMED = 3


def param_of(loc: tuple[Any, ...] | list[Any], body: Any) -> str | None:
    """The field an error's location points at, written as the client wrote it
    (``messages[0].content``): walk ``body`` along ``loc``, keeping keys and indexes that are
    there (and a missing field's name), skipping the labels of union members tried (and the
    ``type`` tag of a discriminated union's member)."""
    parts = list(loc)
    if not parts or parts[0] not in ("body", "query", "path", "header"):
        return None
    if parts[0] != "body":
        return ".".join(str(p) for p in parts[1:]) or None
    param, current = "", body
    for part in parts[1:]:
        if isinstance(part, int) and isinstance(current, list) and 0 <= part < len(current):
            param, current = f"{param}[{part}]", current[part]
        elif isinstance(current, dict) and part not in current and current.get("type") == part:
            continue  # the tag of a discriminated union's member, not a field
        elif isinstance(part, str) and isinstance(current, dict) and (
                part in current or (part.isidentifier() and part.lower() == part
                                    and part not in _TYPE_LABELS)):
            param, current = f"{param}.{part}" if param else part, current.get(part)
    return param or None


def _type_mismatch(error: dict[str, Any]) -> bool:
    return str(error.get("type", "")).endswith(("_type", "_parsing")) or error.get("type") in (
        "literal_error", "union_tag_invalid", "model_attributes_type")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    request_id = request_id_of(request.scope)
    if first.get("type") == "json_invalid":
        message = f"request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}"
        return error_response(400, message, "invalid_request_error", request_id,
                              path=request.url.path)
    # One problem per field: a union's members each fail; the telling one is not a type mismatch.
    by_param: dict[str | None, list[dict[str, Any]]] = {}
    for error in errors:
        by_param.setdefault(param_of(error.get("loc", ()), exc.body), []).append(error)
    # A union member that failed only on its type says less than one that failed deeper inside.
    deeper = {p for p in by_param if p and any(
        q and q != p and q.startswith(p) and q[len(p)] in ".[" for q in by_param)}
    problems = []
    for param, found in by_param.items():
        telling = [e for e in found if not _type_mismatch(e)]
        if param in deeper and not telling:
            continue
        what = (telling[0].get("msg", "invalid") if telling
                else " or ".join(dict.fromkeys(str(e.get("msg", "invalid")) for e in found)))
        source = str(found[0].get("loc", ("body",))[0])
        where = f"{source} field '{param}'" if param else f"request {source}"
        problems.append((param, f"{where}: {what}"))
    param = problems[0][0]
    message = "; ".join(text for _, text in problems[:MAX_PROBLEMS_NAMED])
    if len(problems) > MAX_PROBLEMS_NAMED:
        more = len(problems) - MAX_PROBLEMS_NAMED
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return error_response(400, message, "invalid_request_error", request_id, param=param,
                          path=request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404 and exc.detail in (None, "Not Found"):
        message = (f"no route {request.method} {request.url.path}; the API lives under /api/v1 "
                   "(or /v1), see /api/v1/docs")
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    kind = _KIND_OF_STATUS.get(status, "internal_error" if status >= 500 else "invalid_request_error")
    return error_response(status, message, kind, request_id_of(request.scope),
                          dict(exc.headers or {}), path=request.url.path)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware calls this (outside our middleware), then re-raises so the
    # server logs the traceback; the client gets the request id to quote, never internals.
    request_id = request_id_of(request.scope)
    return error_response(500, f"internal error; quote request id {request_id} when reporting it",
                          "internal_error", request_id, path=request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PendraError, _pendra_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)

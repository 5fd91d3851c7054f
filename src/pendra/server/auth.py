"""API-key authentication for the public API: ``Authorization: Bearer pdr_sk_…`` or ``x-api-key``.

Rules:
- Every request looks its key up in the store (by SHA-256, see store/keys.py); nothing is cached,
  so a revoked key is refused on the very next request. The lookup only reads: the use is noted in
  ``app.state.last_used`` and written later, off the request path (server/last_used.py), so a
  slow or locked database cannot fail a request over bookkeeping.
- Absent, unknown and revoked keys are all 401, with a message saying which of the first two it
  was (an unknown and a revoked key are indistinguishable by design: the store does not say).
- ``/status`` also accepts the per-start admin token the local CLI reads from server.yaml.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from pendra.errors import Unauthorized
from pendra.server.last_used import LastUsed
from pendra.server.store import keys
from pendra.server.store.db import Store
from pendra.server.store.tables import ApiKey

KEY_HINT = "send it as `Authorization: Bearer pdr_sk_…` or in the `x-api-key` header"


def presented_key(request: Request) -> str:
    """The credential the request carries (Bearer wins over x-api-key), or ""."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key", "").strip()


async def authenticate_request(request: Request) -> ApiKey:
    """The live API key of this request; Unauthorized otherwise."""
    raw = presented_key(request)
    if not raw:
        raise Unauthorized(f"missing API key: {KEY_HINT}")
    store: Store = request.app.state.store
    async with store.session() as session:
        row = await keys.authenticate(session, raw)
    if row is None:
        raise Unauthorized("invalid API key: it is unknown or has been revoked")
    last_used: LastUsed = request.app.state.last_used
    last_used.note(row)
    request.state.api_key_id = row.id
    return row


def is_admin_token(request: Request, token: str) -> bool:
    expected: str = getattr(request.app.state.settings, "admin_token", "") or ""
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


async def authenticate_reader(request: Request) -> ApiKey | None:
    """An API key, or the local admin token (then None): who may read ``/status``."""
    raw = presented_key(request)
    if raw and is_admin_token(request, raw):
        return None
    return await authenticate_request(request)


ApiKeyAuth = Annotated[ApiKey, Depends(authenticate_request)]
StatusReader = Annotated[ApiKey | None, Depends(authenticate_reader)]

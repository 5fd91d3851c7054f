"""API-key authentication for the public API: ``Authorization: Bearer pdr_sk_…`` or ``x-api-key``.

Rules:
- Every request looks its key up in the store (by SHA-256, see store/keys.py); nothing is cached,
  so a revoked key is refused on the very next request. The lookup only reads: the use is noted in
  the app's ``LastUsed`` and written later, off the request path (server/last_used.py), so a
  slow or locked database cannot fail a request over bookkeeping.
- Absent, unknown and revoked keys are all 401, with a message saying which of the first two it
  was (an unknown and a revoked key are indistinguishable by design: the store does not say).
- ``/status`` also accepts the per-start admin token the local CLI reads from server.yaml.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pendra.errors import Unauthorized
from pendra.server.admin_auth import is_admin_token
from pendra.server.deps import LastUsedDep, SettingsDep, StoreDep
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


async def _authenticate(request: Request, raw: str, store: Store, last_used: LastUsed) -> ApiKey:
    if not raw:
        raise Unauthorized(f"missing API key: {KEY_HINT}")
    async with store.session() as session:
        row = await keys.authenticate(session, raw)
    if row is None:
        raise Unauthorized("invalid API key: it is unknown or has been revoked")
    last_used.note(row)
    request.state.api_key_id = row.id
    return row


async def authenticate_request(request: Request, store: StoreDep,
                               last_used: LastUsedDep) -> ApiKey:
    """The live API key of this request; Unauthorized otherwise."""
    return await _authenticate(request, presented_key(request), store, last_used)


async def authenticate_reader(request: Request, settings: SettingsDep, store: StoreDep,
                              last_used: LastUsedDep) -> ApiKey | None:
    """An API key, or the local admin token (then None): who may read ``/status``."""
    raw = presented_key(request)
    if raw and is_admin_token(settings, raw):
        return None
    return await _authenticate(request, raw, store, last_used)


ApiKeyAuth = Annotated[ApiKey, Depends(authenticate_request)]
StatusReader = Annotated[ApiKey | None, Depends(authenticate_reader)]

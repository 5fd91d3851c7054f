"""API-key authentication for the public API: ``Authorization: Bearer pdr_sk_…`` or ``x-api-key``.

Rules:
- A request's key is checked against the app's in-memory ``KeyIndex`` (server/key_index.py): no
  store query, no await. The index, not this module, owns how current it is: a key created or
  revoked through this control plane (console, admin API, ``pendra keys``) counts on the very next
  request; one changed in the store from elsewhere counts within ``key_index.SYNC_INTERVAL_S``.
- The use is noted in the app's ``LastUsed`` and written later, off the request path
  (server/last_used.py), so a slow or locked database cannot fail a request over bookkeeping.
- Absent, unknown and revoked keys are all 401, with a message saying which of the first two it
  was (an unknown and a revoked key are indistinguishable by design: the index does not say).
- ``/status`` also accepts the per-start admin token the local CLI reads from server.yaml.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pendra.errors import Unauthorized
from pendra.server.admin_auth import is_admin_token
from pendra.server.deps import KeyIndexDep, LastUsedDep, SettingsDep
from pendra.server.key_index import KeyIndex
from pendra.server.last_used import LastUsed
from pendra.server.store.keys import KeyRow

KEY_HINT = "send it as `Authorization: Bearer pdr_sk_…` or in the `x-api-key` header"


def presented_key(request: Request) -> str:
    """The credential the request carries (Bearer wins over x-api-key), or ""."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key", "").strip()


def _authenticate(request: Request, raw: str, index: KeyIndex, last_used: LastUsed) -> KeyRow:
    if not raw:
        raise Unauthorized(f"missing API key: {KEY_HINT}")
    key = index.authenticate(raw)
    if key is None:
        raise Unauthorized("invalid API key: it is unknown or has been revoked")
    last_used.note(key.id)
    request.state.api_key_id = key.id
    return key


# ``async`` though they never await: FastAPI runs a plain ``def`` dependency in a thread.
async def authenticate_request(request: Request, index: KeyIndexDep,
                               last_used: LastUsedDep) -> KeyRow:
    """The live API key of this request; Unauthorized otherwise."""
    return _authenticate(request, presented_key(request), index, last_used)


async def authenticate_reader(request: Request, settings: SettingsDep, index: KeyIndexDep,
                              last_used: LastUsedDep) -> KeyRow | None:
    """An API key, or the local admin token (then None): who may read ``/status``."""
    raw = presented_key(request)
    if raw and is_admin_token(settings, raw):
        return None
    return _authenticate(request, raw, index, last_used)


ApiKeyAuth = Annotated[KeyRow, Depends(authenticate_request)]
StatusReader = Annotated[KeyRow | None, Depends(authenticate_reader)]

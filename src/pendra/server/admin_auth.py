"""Who may administer the fleet over HTTP (installs, removals, status).

Two credentials are accepted: the per-start admin token that the running server writes to
``$PENDRA_HOME/server.yaml`` (the local CLI sends it as ``Authorization: Bearer …``; it acts as an
owner), and a signed-in console user's session (its cookie; it acts with that user's role, see
server/roles.py, so a member's request to an owner-only endpoint is a 403). A request that rides on the session cookie and changes something
(any method but GET, HEAD, OPTIONS) must also carry the session's CSRF token in ``X-CSRF-Token``, or
it is refused with 403: a cookie alone proves only that a browser sent it, not that the console did.
API keys are for inference and read-only listings, not for this.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from pendra.config import ServerSettings
from pendra.errors import Forbidden, Unauthorized
from pendra.server.deps import CurrentSession, SettingsDep
from pendra.server.roles import ADMIN_TOKEN, OWNER, actor_of
from pendra.server.sessions import CSRF_MESSAGE, csrf_passes
from pendra.server.store.audit import Actor

ADMIN_TOKEN_PREFIX = "pdr_admin_"


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def is_admin_token(settings: ServerSettings, token: str) -> bool:
    """Whether ``token`` is this server's per-start admin token (never, when it has none)."""
    expected = settings.admin_token or ""
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def client_address(request: Request) -> str:
    """The caller's address (uvicorn's, proxy headers applied), for logs and the audit log."""
    return request.client.host if request.client else "unknown"


async def require_admin(request: Request, settings: SettingsDep,
                        session: CurrentSession) -> Actor:
    """Who is making the request; 401 without a credential, 403 without CSRF."""
    token = bearer_token(request)
    if token and is_admin_token(settings, token):
        return Actor(ADMIN_TOKEN, OWNER, None, client_address(request))
    if session is not None:
        if not await csrf_passes(request, session):
            raise Forbidden(CSRF_MESSAGE)
        return actor_of(session, client_address(request))
    raise Unauthorized("this endpoint needs the admin token (the `pendra` CLI on the control-plane "
                       "host sends it from $PENDRA_HOME/server.yaml) or a console session")


Admin = Annotated[Actor, Depends(require_admin)]

"""The console's gate: which pages need a session, and what a visitor without one sees.

Sessions, their cookies, revocation and CSRF tokens are the server's (server/sessions.py); the
password throttle too (server/throttle.py). This module only turns them into the console's answers:

Rules:
- Every console page and action but sign-in needs a session (``ConsoleSession``). Without one, a
  page (GET) redirects to sign-in remembering where it was, an action redirects to sign-in alone.
- An unsafe console request without the session's CSRF token, or from another origin, gets a 403
  page (``CsrfRefused``).
- A user whose password was chosen by someone else (an invite, a reset) is sent to Account to
  choose their own before any other page or action (``PasswordChangeRequired``); signing out
  still works.
- Roles are checked by each action (server/roles.py ``require_owner``), server-side.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pendra.errors import Forbidden
from pendra.server.admin_auth import client_address
from pendra.server.deps import CurrentSession
from pendra.server.sessions import CSRF_MESSAGE, SAFE_METHODS, Session, csrf_passes


PASSWORD_CHANGE_PATHS = frozenset({"/account", "/sign-out"})


class CsrfRefused(Forbidden):
    """A console form came without this session's CSRF token (or from another site)."""


class PasswordChangeRequired(Exception):
    """The user must choose their own password first; the handler redirects to Account."""


class SignInRequired(Exception):
    """A console page was asked for without a valid session; the handler redirects to sign-in."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


async def require_session(request: Request, session: CurrentSession) -> Session:
    """Dependency for console pages and actions: the session (CSRF-checked), else sign-in."""
    if session is None:
        target = request.url.path
        if request.method in SAFE_METHODS and request.url.query:
            target += "?" + request.url.query
        raise SignInRequired(target if request.method in SAFE_METHODS else "/")
    if not await csrf_passes(request, session):
        raise CsrfRefused(CSRF_MESSAGE)
    if session.must_change_password and request.url.path not in PASSWORD_CHANGE_PATHS:
        raise PasswordChangeRequired()
    return session


ConsoleSession = Annotated[Session, Depends(require_session)]

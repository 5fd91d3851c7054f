"""The web console: server-rendered pages for the admin, live parts over server-sent events.

``install_console(app)`` adds everything to an app made by ``create_app``: the pages
(``views``), the forms behind them (``actions``), the event streams (``events``), the static
files under ``/console/static`` and five exception handlers (a page without a session redirects to
sign-in; a user who must change their password is sent to Account first; a form without its CSRF
token gets a 403 page; a member asking for an owner-only action gets a 403 page naming the role
needed (the admin API's JSON envelope on API paths); a throttled password attempt gets a 429
page, or the JSON error envelope when the caller asked for JSON, with ``Retry-After``). Its routes
get the store, hub, installs service, sessions and throttle through server/deps.py at request
time, so it may be called before the lifespan has run; nothing here touches ``app.state``.

Pages live at the root (``/models``, ``/workers``, ``/api-keys``, ``/usage``, ``/users``,
``/audit``, ``/account``, ``/sign-in``); the public API keeps ``/api/v1`` and ``/v1``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from pendra.server.console import actions, events, views
from pendra.server.console.auth import CsrfRefused, PasswordChangeRequired, SignInRequired
from pendra.server.console.rendering import Page
from pendra.server.errors import (error_response, pendra_error_response, request_id_of,
                                  retry_after)
from pendra.server.roles import OwnerOnly
from pendra.server.throttle import SignInThrottled

STATIC_DIR = Path(__file__).with_name("static")
STATIC_PREFIX = "/console/static"


async def _sign_in_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    target = "/sign-in" if exc.next_url in ("", "/") else f"/sign-in?next={quote(exc.next_url)}"
    return RedirectResponse(target, status_code=303)


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CsrfRefused)
    return Page(request).render("error.html", {"title": "Request refused", "status": 403,
                                               "message": exc.message}, status=403)


async def _throttled(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInThrottled)
    headers = retry_after(exc)
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return error_response(exc.status, exc.message, exc.kind, request_id_of(request.scope),
                              headers)
    return Page(request).render("error.html", {"title": "Too many attempts",
                                               "status": exc.status, "message": exc.message},
                                status=exc.status, headers=headers)


async def _owner_only(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OwnerOnly)
    path = request.url.path
    if path.startswith(("/api/", "/v1/")):
        return pendra_error_response(exc, request_id_of(request.scope), path)
    return Page(request).render("error.html", {"title": "Owners only", "status": 403,
                                               "message": exc.message[:1].upper() + exc.message[1:]
                                               + "."}, status=403)


async def _change_password_first(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PasswordChangeRequired)
    return RedirectResponse("/account", status_code=303)


def install_console(app: FastAPI) -> None:
    """Add the console's routes, static files and its exception handlers to ``app``."""
    app.include_router(views.router)
    app.include_router(actions.router)
    app.include_router(events.router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="console-static")
    app.add_exception_handler(SignInRequired, _sign_in_redirect)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(SignInThrottled, _throttled)
    app.add_exception_handler(OwnerOnly, _owner_only)
    app.add_exception_handler(PasswordChangeRequired, _change_password_first)


__all__ = ["install_console"]

"""What the console's forms do: sign in and out, change the password, install, cancel and remove
models, add and remove workers, create and revoke keys.

Rules: every action but signing in needs the session and its CSRF token (``require_session``
checks both). Every password check (sign-in, the current password of a change) is first admitted
by the throttle (429 past it), reads the stored hash in a session that is closed before the
password is hashed in a thread, and logs a failure with the client address. An action either redirects (303) to the page it came from with a one-line notice or
error, or — when it made a secret that is shown exactly once (an API key, a worker's private key) —
renders that page directly with ``Cache-Control: no-store``. Failures the admin can act on are
Pendra's own errors and are shown as their message; nothing else is caught here.
"""

from __future__ import annotations

import logging
import shlex
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from pendra.errors import PendraError
from pendra.protocol import signing
from pendra.protocol.close import CloseReason
from pendra.server.console.auth import (CsrfRefused, Session, clear_session_cookie,
                                        client_address, console_auth, end_session,
                                        password_fingerprint, read_form, require_session,
                                        same_origin, set_session_cookie)
from pendra.server.console.rendering import NO_STORE, redirect, render
from pendra.server.console.throttle import clip_address
from pendra.server.console.views import (account_page, keys_page, safe_next, sign_in_page,
                                         workers_page)
from pendra.server.store import admin as admin_store
from pendra.server.store import keys as key_store
from pendra.server.store import workers as worker_store

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
ConsoleSession = Annotated[Session, Depends(require_session)]
REQUESTED_BY = "admin (console)"
WRONG_PASSWORD = "That password is not correct."


def _back(form: dict[str, str], default: str) -> str:
    return safe_next(form.get("return_to") or default)


# --- signing in and out ---------------------------------------------------------------------------


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    if not same_origin(request):
        raise CsrfRefused("sign-in forms are only accepted from the console itself")
    form = await read_form(request)
    password, next_url = form.get("password", ""), safe_next(form.get("next"))
    auth, client = console_auth(request), client_address(request)
    auth.throttle.admit(client, time.monotonic())
    async with request.app.state.store.session() as db:
        stored = await admin_store.stored_hash(db)
    # Hashed in a thread, with the session (and its pooled connection) already given back.
    if stored is None or not await admin_store.verify_password(password, stored):
        log.warning("failed console sign-in from %s", clip_address(client))
        return render(request, "sign_in.html", sign_in_page(next_url, WRONG_PASSWORD), status=401)
    log.info("console sign-in from %s", clip_address(client))
    cookie, _ = auth.issue(password_fingerprint(stored))
    response = RedirectResponse(next_url, status_code=303)
    set_session_cookie(request, response, cookie, auth.ttl_s)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: ConsoleSession) -> Response:
    await end_session(request, session)
    response = redirect(request, "/sign-in", notice="You are signed out.")
    clear_session_cookie(request, response)
    return response


async def _current_password_error(request: Request, current: str) -> str | None:
    """Why ``current`` cannot authorise a password change, or None; throttled like sign-in."""
    client = client_address(request)
    console_auth(request).throttle.admit(client, time.monotonic())
    async with request.app.state.store.session() as db:
        stored = await admin_store.stored_hash(db)
    if await admin_store.verify_password(current, stored):
        return None
    log.warning("failed console password change from %s: wrong current password",
                clip_address(client))
    return "The current password is not correct."


@router.post("/account")
async def change_password(request: Request, session: ConsoleSession) -> Response:
    form = await read_form(request)
    current, new = form.get("current_password", ""), form.get("new_password", "")
    error = None
    if new != form.get("confirm_password", ""):
        error = "The new password and its confirmation differ."
    else:
        error = await _current_password_error(request, current)
    if error is None:
        try:
            async with request.app.state.store.session() as db:
                row = await admin_store.set_admin_password(db, new)
                await db.commit()
        except PendraError as exc:
            error = exc.message.capitalize() + "."
    if error is not None:
        return render(request, "account.html", account_page(error), session=session, status=400)
    await end_session(request, session)
    auth = console_auth(request)
    cookie, _ = auth.issue(password_fingerprint(row.password_hash))
    response = redirect(request, "/account",
                        notice="Password changed. Every other session has been signed out.")
    set_session_cookie(request, response, cookie, auth.ttl_s)
    return response


# --- models ---------------------------------------------------------------------------------------


@router.post("/models/install")
async def install(request: Request, _: ConsoleSession) -> Response:
    form = await read_form(request)
    back = _back(form, "/models")
    try:
        snap = await request.app.state.installs.start(
            form.get("model", ""), form.get("variant") or None, form.get("worker", ""),
            requested_by=REQUESTED_BY)
    except PendraError as exc:
        return redirect(request, back, error=exc.message)
    return redirect(request, back + "#installs",
                    notice=f"Installing {snap.model_tag} on {snap.worker_name}.")


@router.post("/installs/{op_id}/cancel")
async def cancel_install(request: Request, op_id: str, _: ConsoleSession) -> Response:
    back = _back(await read_form(request), "/models")
    try:
        snap = await request.app.state.installs.cancel(op_id)
    except PendraError as exc:
        return redirect(request, back, error=exc.message)
    return redirect(request, back + "#installs",
                    notice=f"Cancelling the install of {snap.model_tag} on {snap.worker_name}.")


@router.post("/workers/{worker_id}/models/remove")
async def remove_model(request: Request, worker_id: str, _: ConsoleSession) -> Response:
    form = await read_form(request)
    back, model = _back(form, "/models"), form.get("model", "")
    try:
        await request.app.state.installs.remove(worker_id, model)
    except PendraError as exc:
        return redirect(request, back, error=exc.message)
    worker = request.app.state.hub.get(worker_id)
    where = worker.name if worker is not None else worker_id
    return redirect(request, back, notice=f"Removed {model} from {where}.")


# --- workers --------------------------------------------------------------------------------------


def worker_command(request: Request, worker_id: str, name: str, private_key: str) -> str:
    """The shell line that starts this worker against this control plane."""
    base = str(request.base_url).rstrip("/")
    ws_url = "ws" + base[len("http"):]
    return (f"GPU_WORKER_PRIVATE_KEY={shlex.quote(private_key)} WORKER_ID={worker_id} "
            f"WORKER_NAME={shlex.quote(name)} APP_SERVER_WS_URL={ws_url} pendra worker")


@router.post("/workers")
async def add_worker(request: Request, session: ConsoleSession) -> Response:
    name = (await read_form(request)).get("name", "")
    private_key, public_key = signing.generate_keypair()
    try:
        async with request.app.state.store.session() as db:
            row = await worker_store.enrol_worker(db, name, public_key)
            await db.commit()
    except PendraError as exc:
        return render(request, "workers.html", await workers_page(request, error=exc.message),
                      session=session, status=exc.status)
    new = {"id": row.id, "name": row.name, "private_key": private_key,
           "command": worker_command(request, row.id, row.name, private_key)}
    return render(request, "workers.html", await workers_page(request, new_worker=new),
                  session=session, status=201, headers=NO_STORE)


@router.post("/workers/{worker_id}/remove")
async def remove_worker(request: Request, worker_id: str, _: ConsoleSession) -> Response:
    try:
        async with request.app.state.store.session() as db:
            row = await worker_store.remove_worker(db, worker_id)
            await db.commit()
    except PendraError as exc:
        return redirect(request, "/workers", error=exc.message)
    if request.app.state.hub.get(row.id) is not None:
        await request.app.state.hub.disconnect(row.id, CloseReason.WORKER_REMOVED)
    return redirect(request, "/workers",
                    notice=f"Removed worker {row.name}; its key no longer connects.")


# --- API keys -------------------------------------------------------------------------------------


@router.post("/api-keys")
async def create_key(request: Request, session: ConsoleSession) -> Response:
    name = (await read_form(request)).get("name", "")
    try:
        async with request.app.state.store.session() as db:
            row, raw = await key_store.create_key(db, name)
            await db.commit()
    except PendraError as exc:
        return render(request, "api_keys.html", await keys_page(request, error=exc.message),
                      session=session, status=exc.status)
    return render(request, "api_keys.html",
                  await keys_page(request, new_key={"id": row.id, "name": row.name, "raw": raw}),
                  session=session, status=201, headers=NO_STORE)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, _: ConsoleSession) -> Response:
    try:
        async with request.app.state.store.session() as db:
            row = await key_store.revoke_key(db, key_id)
            await db.commit()
    except PendraError as exc:
        return redirect(request, "/api-keys", error=exc.message)
    return redirect(request, "/api-keys",
                    notice=f"Revoked {row.name} ({row.prefix}…); it stopped working just now.")

"""What the console's forms do: sign in and out, change the password, install, cancel and remove
models, add and remove workers, create and revoke keys.

Rules: every action but signing in needs the session and its CSRF token (``ConsoleSession``
checks both). Every password check (sign-in, the current password of a change) is first admitted
by the throttle (server/throttle.py; 429 past it), reads the stored hash in a session that is
closed before the password is hashed in a thread, and logs a failure with the client address. An
action either redirects (303) to the page it came from with a one-line notice or error, or — when
it made a secret that is shown exactly once (an API key, a worker's private key) — renders that
page directly with ``Cache-Control: no-store``. Workers are enrolled, and their command line made,
by server/enrolment.py, as for the CLI; keys are created and revoked through the app's key index
(server/key_index.py), so the change counts on the very next API request. Failures the admin can
act on are Pendra's own errors and are shown as their message; nothing else is caught here.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from pendra.errors import InvalidRequest, PendraError
from pendra.protocol.close import CloseReason
from pendra.server.console.auth import ConsoleSession, CsrfRefused, client_address
from pendra.server.console.rendering import NO_STORE, PageDep
from pendra.server.console.views import (account_page, keys_page, safe_next, sign_in_page,
                                         workers_page)
from pendra.server.deps import (HubDep, InstallsDep, KeyIndexDep, LimiterDep, SessionsDep,
                                SettingsDep, SignInThrottleDep, StoreDep)
from pendra.server.enrolment import enrol_worker, worker_command, worker_ws_url
from pendra.server.limits import LIMIT_FIELDS, KeyLimits, parse_limits
from pendra.server.public_url import public_base
from pendra.server.sessions import (clear_session_cookie, end_session, password_fingerprint,
                                    read_form, same_origin, set_session_cookie)
from pendra.server.store import admin as admin_store
from pendra.server.store import workers as worker_store
from pendra.server.store.db import Store
from pendra.server.throttle import SignInThrottle, clip_address

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
REQUESTED_BY = "admin (console)"
WRONG_PASSWORD = "That password is not correct."


def _back(form: dict[str, str], default: str) -> str:
    return safe_next(form.get("return_to") or default)


# --- signing in and out ---------------------------------------------------------------------------


@router.post("/sign-in")
async def sign_in(request: Request, page: PageDep, sessions: SessionsDep, store: StoreDep,
                  throttle: SignInThrottleDep) -> Response:
    if not same_origin(request):
        raise CsrfRefused("sign-in forms are only accepted from the console itself")
    form = await read_form(request)
    password, next_url = form.get("password", ""), safe_next(form.get("next"))
    client = client_address(request)
    throttle.admit(client, time.monotonic())
    async with store.session() as db:
        stored = await admin_store.stored_hash(db)
    # Hashed in a thread, with the session (and its pooled connection) already given back.
    if stored is None or not await admin_store.verify_password(password, stored):
        log.warning("failed console sign-in from %s", clip_address(client))
        return page.render("sign_in.html", sign_in_page(next_url, WRONG_PASSWORD), status=401)
    log.info("console sign-in from %s", clip_address(client))
    cookie, _ = sessions.issue(password_fingerprint(stored))
    response = RedirectResponse(next_url, status_code=303)
    set_session_cookie(request, response, cookie, sessions.ttl_s)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, page: PageDep, session: ConsoleSession,
                   store: StoreDep) -> Response:
    await end_session(store, session)
    response = page.redirect("/sign-in", notice="You are signed out.")
    clear_session_cookie(request, response)
    return response


async def _current_password_error(client: str, store: Store, throttle: SignInThrottle,
                                  current: str) -> str | None:
    """Why ``current`` cannot authorise a password change, or None; throttled like sign-in."""
    throttle.admit(client, time.monotonic())
    async with store.session() as db:
        stored = await admin_store.stored_hash(db)
    if await admin_store.verify_password(current, stored):
        return None
    log.warning("failed console password change from %s: wrong current password",
                clip_address(client))
    return "The current password is not correct."


@router.post("/account")
async def change_password(request: Request, page: PageDep, session: ConsoleSession,
                          sessions: SessionsDep, store: StoreDep,
                          throttle: SignInThrottleDep) -> Response:
    form = await read_form(request)
    current, new = form.get("current_password", ""), form.get("new_password", "")
    error = None
    if new != form.get("confirm_password", ""):
        error = "The new password and its confirmation differ."
    else:
        error = await _current_password_error(client_address(request), store, throttle, current)
    if error is None:
        try:
            row = await store.change(lambda db: admin_store.set_admin_password(db, new))
        except PendraError as exc:
            error = exc.message.capitalize() + "."
    if error is not None:
        return page.render("account.html", account_page(error), session=session, status=400)
    await end_session(store, session)
    cookie, _ = sessions.issue(password_fingerprint(row.password_hash))
    response = page.redirect("/account",
                             notice="Password changed. Every other session has been signed out.")
    set_session_cookie(request, response, cookie, sessions.ttl_s)
    return response


# --- models ---------------------------------------------------------------------------------------


def _backend_field(value: str | None) -> str | None:
    """The form's target backend: a kind name, or None to let the installs service choose."""
    if not value:
        return None
    if len(value) > 32 or not all(c.isalnum() or c in "_-" for c in value):
        raise InvalidRequest("backend must be a backend name such as ollama or lmstudio")
    return value


@router.post("/models/install")
async def install(request: Request, page: PageDep, _: ConsoleSession,
                  installs: InstallsDep) -> Response:
    form = await read_form(request)
    back = _back(form, "/models")
    try:
        snap = await installs.start(
            form.get("model", ""), form.get("variant") or None, form.get("worker", ""),
            requested_by=REQUESTED_BY, backend=_backend_field(form.get("backend")))
    except PendraError as exc:
        return page.redirect(back, error=exc.message)
    return page.redirect(back + "#installs",
                         notice=f"Installing {snap.model_tag} on {snap.worker_name}.")


@router.post("/installs/{op_id}/cancel")
async def cancel_install(request: Request, page: PageDep, op_id: str, _: ConsoleSession,
                         installs: InstallsDep) -> Response:
    back = _back(await read_form(request), "/models")
    try:
        snap = await installs.cancel(op_id)
    except PendraError as exc:
        return page.redirect(back, error=exc.message)
    return page.redirect(back + "#installs", notice=f"Cancelling the install of {snap.model_tag} "
                                                    f"on {snap.worker_name}.")


@router.post("/workers/{worker_id}/models/remove")
async def remove_model(request: Request, page: PageDep, worker_id: str, _: ConsoleSession,
                       installs: InstallsDep, hub: HubDep) -> Response:
    form = await read_form(request)
    back, model = _back(form, "/models"), form.get("model", "")
    try:
        await installs.remove(worker_id, model)
    except PendraError as exc:
        return page.redirect(back, error=exc.message)
    worker = hub.get(worker_id)
    where = worker.name if worker is not None else worker_id
    return page.redirect(back, notice=f"Removed {model} from {where}.")


# --- workers --------------------------------------------------------------------------------------


@router.post("/workers")
async def add_worker(request: Request, page: PageDep, session: ConsoleSession, store: StoreDep,
                     hub: HubDep, settings: SettingsDep) -> Response:
    name = (await read_form(request)).get("name", "")
    try:
        enrolled = await store.change(lambda db: enrol_worker(db, name))
    except PendraError as exc:
        return page.render("workers.html", await workers_page(store, hub, error=exc.message),
                           session=session, status=exc.status)
    new = {"id": enrolled.worker_id, "name": enrolled.name, "private_key": enrolled.private_key,
           "command": worker_command(enrolled, worker_ws_url(public_base(settings).url))}
    return page.render("workers.html", await workers_page(store, hub, new_worker=new),
                       session=session, status=201, headers=NO_STORE)


@router.post("/workers/{worker_id}/remove")
async def remove_worker(page: PageDep, worker_id: str, _: ConsoleSession, store: StoreDep,
                        hub: HubDep) -> Response:
    try:
        row = await store.change(lambda db: worker_store.remove_worker(db, worker_id))
    except PendraError as exc:
        return page.redirect("/workers", error=exc.message)
    if hub.get(row.id) is not None:
        await hub.disconnect(row.id, CloseReason.WORKER_REMOVED)
    return page.redirect("/workers",
                         notice=f"Removed worker {row.name}; its key no longer connects.")


# --- API keys -------------------------------------------------------------------------------------


@router.post("/api-keys")
async def create_key(request: Request, page: PageDep, session: ConsoleSession,
                     store: StoreDep, keys: KeyIndexDep, limiter: LimiterDep,
                     settings: SettingsDep) -> Response:
    form = await read_form(request)
    base_url = public_base(settings).url
    try:
        row, raw = await keys.create(form.get("name", ""), _form_limits(form))
    except PendraError as exc:
        return page.render("api_keys.html", await keys_page(store, base_url, error=exc.message,
                                                            defaults=limiter.defaults),
                           session=session, status=exc.status)
    new_key = {"id": row.id, "name": row.name, "raw": raw}
    return page.render("api_keys.html", await keys_page(store, base_url, new_key=new_key,
                                                        defaults=limiter.defaults),
                       session=session, status=201, headers=NO_STORE)


def _form_limits(form: dict[str, str]) -> KeyLimits:
    """The limits of a key form: an empty field is "the organisation's default"."""
    return parse_limits({name: value.strip() for name in LIMIT_FIELDS
                         if (value := form.get(name, "")).strip()})


@router.post("/api-keys/{key_id}/limits")
async def set_key_limits(request: Request, page: PageDep, key_id: str, _: ConsoleSession,
                         keys: KeyIndexDep) -> Response:
    try:
        row = await keys.set_limits(key_id, _form_limits(await read_form(request)), replace=True)
    except PendraError as exc:
        return page.redirect("/api-keys", error=exc.message)
    return page.redirect("/api-keys", notice=f"Limits of {row.name} ({row.prefix}…) saved; they "
                                             "apply from its next request.")


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(page: PageDep, key_id: str, _: ConsoleSession,
                     keys: KeyIndexDep) -> Response:
    try:
        row = await keys.revoke(key_id)
    except PendraError as exc:
        return page.redirect("/api-keys", error=exc.message)
    return page.redirect("/api-keys",
                         notice=f"Revoked {row.name} ({row.prefix}…); it stopped working just now.")

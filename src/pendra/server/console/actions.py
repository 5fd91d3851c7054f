"""What the console's forms do: sign in and out, change the password, install, cancel and remove
models, add and remove workers, create and revoke keys, manage users.

Rules: every action but signing in needs the session and its CSRF token (``ConsoleSession``
checks both). Every owner-only action calls ``require_owner`` first, server-side (a member gets
a 403 page naming the role needed; hidden buttons are only a courtesy); a member's key actions
are limited to their own keys. Every change writes its audit row (store/audit.py) in the change's
own transaction; an install or removal handed to a worker, and a failed sign-in, get theirs
after the fact. Every password check (sign-in, the current password of a change) is first admitted
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
import secrets
import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from pendra.errors import InvalidRequest, PendraError
from pendra.protocol.close import CloseReason
from pendra.server.console.auth import ConsoleSession, CsrfRefused, client_address
from pendra.server.console.rendering import NO_STORE, PageDep
from pendra.server.console.views import (account_page, keys_page, safe_next, sign_in_page,
                                         users_page, workers_page)
from pendra.server.deps import (HubDep, InstallsDep, KeyIndexDep, LimiterDep, SessionsDep,
                                SettingsDep, SignInThrottleDep, StoreDep)
from pendra.server.enrolment import (enrol_recorded, remove_recorded, worker_command,
                                     worker_ws_url)
from pendra.server.limits import LIMIT_FIELDS, KeyLimits, parse_limits
from pendra.server.public_url import public_base
from pendra.server.sessions import (clear_session_cookie, end_session, password_fingerprint,
                                    read_form, same_origin, set_session_cookie)
from pendra.server import people
from pendra.server.roles import OwnerOnly, actor_of, require_owner
from pendra.server.sessions import Session
from pendra.server.store import audit
from pendra.server.store import users as user_store
from pendra.server.store.audit import Actor
from pendra.server.store.tables import NAME_MAX_CHARS
from pendra.server.store.db import Store
from pendra.server.throttle import SignInThrottle, clip_address

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
WRONG_PASSWORD = "That name and password do not match an enabled user."
# Checked against when the name is unknown, so a wrong name takes as long as a wrong password.
_DECOY_HASH = user_store.hash_password(secrets.token_urlsafe(16))


def _actor(request: Request, session: Session) -> Actor:
    return actor_of(session, client_address(request))


async def _audit(store: Store, actor: Actor, action: str, target: str, detail: str = "") -> None:
    """An audit row for something that happened outside the store (a worker was asked to install
    or remove a model; a sign-in failed): its own transaction, after the fact."""
    await store.change(lambda db: audit.record(db, actor, action, target, detail))


def _back(form: dict[str, str], default: str) -> str:
    return safe_next(form.get("return_to") or default)


# --- signing in and out ---------------------------------------------------------------------------


@router.post("/sign-in")
async def sign_in(request: Request, page: PageDep, sessions: SessionsDep, store: StoreDep,
                  throttle: SignInThrottleDep) -> Response:
    if not same_origin(request):
        raise CsrfRefused("sign-in forms are only accepted from the console itself")
    form = await read_form(request)
    name, password = form.get("name", "").strip(), form.get("password", "")
    next_url = safe_next(form.get("next"))
    client = client_address(request)
    throttle.admit(client, time.monotonic())
    async with store.session() as db:
        user = await user_store.credentials(db, name) if name else None
    # Hashed in a thread, with the session (and its pooled connection) already given back. An
    # unknown or disabled name costs the same hash, so timing does not tell which names exist.
    stored = user.password_hash if user is not None else _DECOY_HASH
    if not await user_store.verify_password(password, stored) or user is None:
        log.warning("failed console sign-in from %s", clip_address(client))
        await _audit(store, Actor(name[:NAME_MAX_CHARS] or "(no name)", "", None, client),
                     "sign_in.failed", "", "wrong name or password")
        return page.render("sign_in.html", sign_in_page(next_url, WRONG_PASSWORD, name),
                           status=401)
    log.info("console sign-in of %s from %s", user.id, clip_address(client))
    cookie, _ = sessions.issue(user.id, password_fingerprint(user.password_hash))
    response = RedirectResponse("/account" if user.must_change_password else next_url,
                                status_code=303)
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
                                  user_id: str, current: str) -> str | None:
    """Why ``current`` cannot authorise a password change, or None; throttled like sign-in."""
    throttle.admit(client, time.monotonic())
    async with store.session() as db:
        user = await user_store.get_user(db, user_id)
    if user is not None and await user_store.verify_password(current, user.password_hash):
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
    elif new and new == current:
        error = "The new password must differ from the current one."
    else:
        error = await _current_password_error(client_address(request), store, throttle,
                                              session.user_id, current)
    if error is None:
        try:
            row = await people.change_own_password(store, _actor(request, session), new)
        except PendraError as exc:
            error = exc.message.capitalize() + "."
    if error is not None:
        return page.render("account.html", account_page(session, error), session=session,
                           status=400)
    await end_session(store, session)
    cookie, _ = sessions.issue(row.id, password_fingerprint(row.password_hash))
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
async def install(request: Request, page: PageDep, session: ConsoleSession,
                  installs: InstallsDep, store: StoreDep) -> Response:
    require_owner(session, "install models")
    form = await read_form(request)
    back = _back(form, "/models")
    try:
        snap = await installs.start(
            form.get("model", ""), form.get("variant") or None, form.get("worker", ""),
            requested_by=session.user_name, backend=_backend_field(form.get("backend")))
    except PendraError as exc:
        return page.redirect(back, error=exc.message)
    await _audit(store, _actor(request, session), "model.install_requested",
                 f"{snap.model_tag} on {snap.worker_name}", snap.id)
    return page.redirect(back + "#installs",
                         notice=f"Installing {snap.model_tag} on {snap.worker_name}.")


@router.post("/installs/{op_id}/cancel")
async def cancel_install(request: Request, page: PageDep, op_id: str, session: ConsoleSession,
                         installs: InstallsDep, store: StoreDep) -> Response:
    require_owner(session, "cancel installs")
    back = _back(await read_form(request), "/models")
    try:
        snap = await installs.cancel(op_id)
    except PendraError as exc:
        return page.redirect(back, error=exc.message)
    await _audit(store, _actor(request, session), "model.install_cancelled",
                 f"{snap.model_tag} on {snap.worker_name}", snap.id)
    return page.redirect(back + "#installs", notice=f"Cancelling the install of {snap.model_tag} "
                                                    f"on {snap.worker_name}.")


@router.post("/workers/{worker_id}/models/remove")
async def remove_model(request: Request, page: PageDep, worker_id: str, session: ConsoleSession,
                       installs: InstallsDep, hub: HubDep, store: StoreDep) -> Response:
    require_owner(session, "remove models")
    form = await read_form(request)
    back, model = _back(form, "/models"), form.get("model", "")
    try:
        await installs.remove(worker_id, model)
    except PendraError as exc:
        return page.redirect(back, error=exc.message)
    worker = hub.get(worker_id)
    where = worker.name if worker is not None else worker_id
    await _audit(store, _actor(request, session), "model.remove_requested", f"{model} on {where}")
    return page.redirect(back, notice=f"Removed {model} from {where}.")


# --- workers --------------------------------------------------------------------------------------


@router.post("/workers")
async def add_worker(request: Request, page: PageDep, session: ConsoleSession, store: StoreDep,
                     hub: HubDep, settings: SettingsDep) -> Response:
    require_owner(session, "add workers")
    name = (await read_form(request)).get("name", "")
    actor = _actor(request, session)
    try:
        enrolled = await store.change(lambda db: enrol_recorded(db, actor, name))
    except PendraError as exc:
        return page.render("workers.html", await workers_page(store, hub, error=exc.message),
                           session=session, status=exc.status)
    new = {"id": enrolled.worker_id, "name": enrolled.name, "private_key": enrolled.private_key,
           "command": worker_command(enrolled, worker_ws_url(public_base(settings).url))}
    return page.render("workers.html", await workers_page(store, hub, new_worker=new),
                       session=session, status=201, headers=NO_STORE)


@router.post("/workers/{worker_id}/remove")
async def remove_worker(request: Request, page: PageDep, worker_id: str, session: ConsoleSession,
                        store: StoreDep, hub: HubDep) -> Response:
    require_owner(session, "remove workers")
    actor = _actor(request, session)
    try:
        row = await store.change(lambda db: remove_recorded(db, actor, worker_id))
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
    actor = _actor(request, session)
    try:
        limits = _form_limits(form)
        if limits != KeyLimits():
            require_owner(session, "set key limits")
        owner = form.get("user", "").strip()
        user_id = await people.key_owner(store, actor, owner) if owner else session.user_id
        row, raw = await keys.create(form.get("name", ""), limits, user_id=user_id, actor=actor)
    except OwnerOnly:
        raise  # a 403 page, not a form error
    except PendraError as exc:
        return page.render("api_keys.html", await keys_page(store, base_url, session,
                                                            error=exc.message,
                                                            defaults=limiter.defaults),
                           session=session, status=exc.status)
    new_key = {"id": row.id, "name": row.name, "raw": raw}
    return page.render("api_keys.html", await keys_page(store, base_url, session,
                                                        new_key=new_key,
                                                        defaults=limiter.defaults),
                       session=session, status=201, headers=NO_STORE)


def _form_limits(form: dict[str, str]) -> KeyLimits:
    """The limits of a key form: an empty field is "the organisation's default"."""
    return parse_limits({name: value.strip() for name in LIMIT_FIELDS
                         if (value := form.get(name, "")).strip()})


@router.post("/api-keys/{key_id}/limits")
async def set_key_limits(request: Request, page: PageDep, key_id: str, session: ConsoleSession,
                         keys: KeyIndexDep) -> Response:
    require_owner(session, "change key limits")
    try:
        row = await keys.set_limits(key_id, _form_limits(await read_form(request)), replace=True,
                                    actor=_actor(request, session))
    except PendraError as exc:
        return page.redirect("/api-keys", error=exc.message)
    return page.redirect("/api-keys", notice=f"Limits of {row.name} ({row.prefix}…) saved; they "
                                             "apply from its next request.")


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(request: Request, page: PageDep, key_id: str, session: ConsoleSession,
                     keys: KeyIndexDep) -> Response:
    only_of = None if session.is_owner else session.user_id
    try:
        row = await keys.revoke(key_id, actor=_actor(request, session), only_of=only_of)
    except OwnerOnly:
        raise  # a 403 page, not a form error
    except PendraError as exc:
        return page.redirect("/api-keys", error=exc.message)
    return page.redirect("/api-keys",
                         notice=f"Revoked {row.name} ({row.prefix}…); it stopped working just now.")


# --- users (owner only; the rules are server/people.py's) -----------------------------------------


@router.post("/users")
async def add_user(request: Request, page: PageDep, session: ConsoleSession,
                   store: StoreDep, settings: SettingsDep) -> Response:
    require_owner(session, "add users")
    form = await read_form(request)
    try:
        row, password = await people.add_user(store, _actor(request, session),
                                              form.get("name", ""), form.get("role", "member"))
    except PendraError as exc:
        return page.render("users.html", await users_page(store, session, error=exc.message),
                           session=session, status=exc.status)
    new_user = {"id": row.id, "name": row.name, "role": row.role, "password": password,
                "reset": False, "sign_in_url": public_base(settings).url.rstrip("/") + "/sign-in"}
    return page.render("users.html", await users_page(store, session, new_user=new_user),
                       session=session, status=201, headers=NO_STORE)


@router.post("/users/{user_id}/disable")
async def disable_user(request: Request, page: PageDep, user_id: str, session: ConsoleSession,
                       store: StoreDep, keys: KeyIndexDep) -> Response:
    require_owner(session, "disable users")
    try:
        row, revoked = await people.set_disabled(store, keys, _actor(request, session), user_id,
                                                 True)
    except PendraError as exc:
        return page.redirect("/users", error=exc.message)
    return page.redirect("/users", notice=f"Disabled {row.name}: signed out everywhere, "
                                          f"{len(revoked)} API key(s) revoked.")


@router.post("/users/{user_id}/enable")
async def enable_user(request: Request, page: PageDep, user_id: str, session: ConsoleSession,
                      store: StoreDep, keys: KeyIndexDep) -> Response:
    require_owner(session, "enable users")
    try:
        row, _ = await people.set_disabled(store, keys, _actor(request, session), user_id, False)
    except PendraError as exc:
        return page.redirect("/users", error=exc.message)
    return page.redirect("/users", notice=f"Enabled {row.name}; they can sign in again (their "
                                          "revoked keys stay revoked).")


@router.post("/users/{user_id}/remove")
async def remove_user(request: Request, page: PageDep, user_id: str, session: ConsoleSession,
                      store: StoreDep, keys: KeyIndexDep) -> Response:
    require_owner(session, "remove users")
    try:
        row, revoked = await people.remove_user(store, keys, _actor(request, session), user_id)
    except PendraError as exc:
        return page.redirect("/users", error=exc.message)
    return page.redirect("/users", notice=f"Removed {row.name}: {len(revoked)} API key(s) "
                                          "revoked, their keys are now yours.")


@router.post("/users/{user_id}/role")
async def set_role(request: Request, page: PageDep, user_id: str, session: ConsoleSession,
                   store: StoreDep) -> Response:
    require_owner(session, "change roles")
    role = (await read_form(request)).get("role", "")
    try:
        row = await people.set_role(store, _actor(request, session), user_id, role)
    except PendraError as exc:
        return page.redirect("/users", error=exc.message)
    return page.redirect("/users", notice=f"{row.name} is now an {row.role}."
                         if row.role == "owner" else f"{row.name} is now a {row.role}.")


@router.post("/users/{user_id}/reset-password")
async def reset_password(request: Request, page: PageDep, user_id: str, session: ConsoleSession,
                         store: StoreDep, settings: SettingsDep) -> Response:
    require_owner(session, "reset other people's passwords")
    try:
        row, password = await people.reset_password(store, _actor(request, session), user_id)
    except PendraError as exc:
        return page.redirect("/users", error=exc.message)
    new_user = {"id": row.id, "name": row.name, "role": row.role, "password": password,
                "reset": True, "sign_in_url": public_base(settings).url.rstrip("/") + "/sign-in"}
    return page.render("users.html", await users_page(store, session, new_user=new_user),
                       session=session, headers=NO_STORE)

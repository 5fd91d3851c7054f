"""Console users' sessions: signed session cookies, their revocation, and CSRF tokens.

The console signs users in and out with these, and the admin API (admin_auth.py) accepts a
session as a credential, so they belong to the server, not to the console's pages.

Rules:
- A session lives in one cookie, ``<payload>.<signature>``: the payload is base64url JSON
  ``{"sid", "exp", "uid", "pw"}`` and the signature HMAC-SHA256 over it with the session secret. The
  secret is 32 random bytes made once and kept in ``$PENDRA_HOME/console-secret`` (0600), so
  sessions survive a restart; it is read on first use, not when the app is built.
- ``uid`` is the user's id and ``pw`` a fingerprint of their stored password hash. Every request
  that rides on a session reads that user (``current_session``): a removed or disabled user's
  sessions end on their next request, and a password change ends every session of that user but
  the one that changed it (which gets a fresh cookie). The session carries the user's name and
  role as they are now, not as they were at sign-in. (A cookie from before users existed has no
  ``uid`` and is refused: sign in again.)
- Sessions expire ``SESSION_TTL_S`` after sign-in. Signing out (``end_session``) revokes the
  session id in the store until it would have expired anyway (store/sessions.py), so the cookie
  stays refused after a restart and on every replica; ``current_session`` refuses a revoked id.
- The cookie is HttpOnly, SameSite=Lax, and Secure whenever the request came over https.
- CSRF: each session has one token, HMAC(secret, "csrf:" + sid). Every unsafe request that rides
  on the session carries it in the ``csrf_token`` form field or the ``X-CSRF-Token`` header, and
  does not come from another origin (``csrf_passes``); otherwise it is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

from fastapi import Request

from pendra.errors import PayloadTooLarge
from pendra.home import write_private
from pendra.server.store import sessions as session_store
from pendra.server.store import users as user_store
from pendra.server.store.db import Store
from pendra.server.store.tables import User

COOKIE_NAME = "pendra_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SECRET_FILE = "console-secret"
SECRET_BYTES = 32
# A working day: long enough not to nag, short enough that a forgotten laptop does not stay in.
SESSION_TTL_S = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Console forms are a few short fields; anything bigger is not one of ours.
FORM_MAX_BYTES = 64 * 1024
CSRF_MESSAGE = ("this form has expired or did not come from the console; reload the page and "
                "try again")


@dataclass(frozen=True)
class Session:
    """A signed-in user's session, with who they are as of this request."""

    sid: str
    expires_at: float
    csrf_token: str
    user_id: str = ""
    user_name: str = ""
    role: str = ""
    must_change_password: bool = False

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(path: Path) -> bytes:
    """The session secret at ``path``, created (0600) on first use."""
    try:
        raw = path.read_text(encoding="ascii").strip()
        secret = _unb64(raw)
        if len(secret) >= SECRET_BYTES:
            return secret
    except FileNotFoundError:
        pass
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass  # unreadable: replace it, which signs everyone out
    secret = secrets.token_bytes(SECRET_BYTES)
    write_private(path, _b64(secret) + "\n")
    return secret


def password_fingerprint(password_hash: str) -> str:
    """Changes whenever the user's password does (each hash has a fresh salt)."""
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:16]


class Sessions:
    """Signs and checks session cookies and CSRF tokens for one app.

    ``secret`` is the key itself, or the file it lives in (read, or made, on first use)."""

    def __init__(self, secret: bytes | Path, *, ttl_s: float = SESSION_TTL_S) -> None:
        self._secret_file = secret if isinstance(secret, Path) else None
        self._secret_bytes = secret if isinstance(secret, bytes) else None
        self._ttl_s = ttl_s

    @property
    def _secret(self) -> bytes:
        if self._secret_bytes is None:
            assert self._secret_file is not None
            self._secret_bytes = load_secret(self._secret_file)
        return self._secret_bytes

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    # --- signing --------------------------------------------------------------------------------

    def sign(self, payload: dict[str, object]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        mac = hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def unsign(self, value: str) -> dict[str, object] | None:
        body, _, mac = value.partition(".")
        if not body or not mac:
            return None
        expected = hmac.new(self._secret, body.encode("ascii", "replace"), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(mac), expected):
                return None
            data = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            return None
        return data if isinstance(data, dict) else None

    # --- sessions -------------------------------------------------------------------------------

    def _csrf_for(self, sid: str) -> str:
        return _b64(hmac.new(self._secret, f"csrf:{sid}".encode(), hashlib.sha256).digest())

    def issue(self, user_id: str, fingerprint: str) -> tuple[str, Session]:
        """A new session for the user ``user_id`` whose password has ``fingerprint``."""
        sid = secrets.token_urlsafe(16)
        expires_at = time.time() + self._ttl_s
        cookie = self.sign({"sid": sid, "exp": int(expires_at), "uid": user_id,
                            "pw": fingerprint})
        return cookie, Session(sid, expires_at, self._csrf_for(sid), user_id)

    def claims(self, cookie: str) -> tuple[str, float, str, str] | None:
        """``(sid, exp, uid, pw)`` of a genuine, unexpired cookie; None otherwise."""
        data = self.unsign(cookie)
        if data is None:
            return None
        sid, exp, uid, pw = data.get("sid"), data.get("exp"), data.get("uid"), data.get("pw")
        if not (isinstance(sid, str) and isinstance(exp, int) and isinstance(uid, str)
                and isinstance(pw, str)):
            return None
        if exp <= time.time():
            return None
        return sid, float(exp), uid, pw

    def read(self, cookie: str, user: User | None) -> Session | None:
        """The session in ``cookie`` if it is genuine, unexpired, for ``user`` (enabled) and made
        with their current password; revocations are the store's (see ``current_session``)."""
        claims = self.claims(cookie)
        if claims is None or user is None or user.disabled_at is not None:
            return None
        sid, exp, uid, pw = claims
        if uid != user.id or not hmac.compare_digest(pw, password_fingerprint(user.password_hash)):
            return None
        return Session(sid, exp, self._csrf_for(sid), uid, user.name, user.role,
                       bool(user.must_change_password))

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), session.csrf_token.encode())


# --- sessions against the store -------------------------------------------------------------------


async def current_session(sessions: Sessions, store: Store, cookie: str | None) -> Session | None:
    """The valid session in ``cookie``: genuine, unexpired, of a user who exists and is enabled,
    signed with their current password, and not signed out; None otherwise. A cookie that fails
    its signature costs no store read."""
    claims = sessions.claims(cookie) if cookie else None
    if claims is None or cookie is None:
        return None
    async with store.session() as db:
        session = sessions.read(cookie, await user_store.get_user(db, claims[2]))
        if session is not None and await session_store.is_revoked(db, session.sid):
            return None
    return session


async def end_session(store: Store, session: Session) -> None:
    """Sign ``session`` out for good: its id is refused, by every replica, until it expires."""
    async with store.session() as db:
        await session_store.revoke_session(db, session.sid,
                                           datetime.fromtimestamp(session.expires_at, UTC))
        await db.commit()


# --- cookies --------------------------------------------------------------------------------------


def set_session_cookie(request: Request, response: object, cookie: str, ttl_s: float) -> None:
    response.set_cookie(  # type: ignore[attr-defined]
        COOKIE_NAME, cookie, max_age=int(ttl_s), path="/", httponly=True, samesite="lax",
        secure=request.url.scheme == "https")


def clear_session_cookie(request: Request, response: object) -> None:
    response.delete_cookie(  # type: ignore[attr-defined]
        COOKIE_NAME, path="/", httponly=True, samesite="lax",
        secure=request.url.scheme == "https")


# --- CSRF -----------------------------------------------------------------------------------------


async def read_form(request: Request) -> dict[str, str]:
    """The request's url-encoded form fields (last value wins), read once and cached."""
    if "console_form" in request.scope:
        cached: dict[str, str] = request.scope["console_form"]
        return cached
    form: dict[str, str] = {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_MAX_BYTES:
                raise PayloadTooLarge(f"a console form is at most {FORM_MAX_BYTES} bytes")
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.scope["console_form"] = form
    return form


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another site (Origin header)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


async def csrf_passes(request: Request, session: Session) -> bool:
    """Whether a request may act for ``session``: safe methods always; unsafe ones only with the
    session's CSRF token (header or form field) and not from another origin."""
    if request.method in SAFE_METHODS:
        return True
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        token = (await read_form(request)).get(CSRF_FIELD)
    return Sessions.csrf_ok(session, token) and same_origin(request)

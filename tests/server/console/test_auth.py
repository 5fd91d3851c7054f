"""Signing in and out of the console: redirects, cookies, CSRF, password changes, damping."""

from __future__ import annotations

import stat

import httpx
import pytest

from pendra.server import sessions as auth
from pendra.server.sessions import COOKIE_NAME, Sessions

from .conftest import PASSWORD, Console, SignedIn, sign_in

PAGES = ["/models", "/workers", "/api-keys", "/usage", "/account"]


@pytest.mark.parametrize("path", PAGES)
async def test_pages_redirect_to_sign_in_without_a_session(client: httpx.AsyncClient,
                                                           path: str) -> None:
    """Every console page sends a visitor without a session to sign-in, remembering the page."""
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/sign-in?next={path}"


async def test_root_and_sign_in_page(client: httpx.AsyncClient) -> None:
    """/ leads to sign-in; the sign-in page is a plain form with the password field."""
    assert (await client.get("/")).headers["location"] == "/sign-in"
    page = await client.get("/sign-in?next=/usage")
    assert page.status_code == 200
    assert 'name="password"' in page.text and 'value="/usage"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_wrong_password_is_refused_with_a_plain_message(client: httpx.AsyncClient) -> None:
    """A wrong password gets 401, one sentence, and no cookie; it says nothing about why."""
    response = await client.post("/sign-in", data={"name": "admin", "password": "not the password"})
    assert response.status_code == 401
    assert "That name and password do not match an enabled user." in response.text
    assert COOKIE_NAME not in response.headers.get("set-cookie", "")
    assert "scrypt" not in response.text and "hash" not in response.text
    assert (await client.get("/models")).status_code == 303


async def test_session_cookie_flags(client: httpx.AsyncClient) -> None:
    """The session cookie is HttpOnly, SameSite=Lax, site-wide and expiring; not Secure on http."""
    response = await client.post("/sign-in", data={"name": "admin", "password": PASSWORD, "next": "/usage"})
    assert response.status_code == 303 and response.headers["location"] == "/usage"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "max-age", "path", "samesite"} <= flags
    assert "samesite=lax" in cookie.lower() and "secure" not in flags
    assert (await client.get("/usage")).status_code == 200


async def test_session_cookie_is_secure_over_https(client: httpx.AsyncClient) -> None:
    """Behind a TLS proxy (X-Forwarded-Proto from the local proxy) the cookie is also Secure."""
    response = await client.post("/sign-in", data={"name": "admin", "password": PASSWORD},
                                 headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 303
    assert "secure" in {p.strip().lower() for p in response.headers["set-cookie"].split(";")}


async def test_open_redirects_are_refused(client: httpx.AsyncClient) -> None:
    """``next`` may only name a path on this site."""
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = await client.post("/sign-in", data={"name": "admin", "password": PASSWORD, "next": target})
        assert response.headers["location"] == "/models"


async def test_tampered_or_foreign_cookies_are_ignored(console: Console,
                                                       client: httpx.AsyncClient) -> None:
    """A cookie signed with another secret, or edited, is no session."""
    other = Sessions(b"x" * 32)
    forged, _ = other.issue("user_0", "0" * 16)
    client.cookies.set(COOKIE_NAME, forged)
    assert (await client.get("/models")).status_code == 303
    client.cookies.clear()
    await sign_in(client)
    real = client.cookies[COOKIE_NAME]
    edited = real[:5] + ("B" if real[5] != "B" else "C") + real[6:]
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, edited)
    assert (await client.get("/models")).status_code == 303


async def test_sign_out_ends_the_session(admin: SignedIn) -> None:
    """After signing out, the same cookie no longer opens a page."""
    cookie = admin.http.cookies[COOKIE_NAME]
    response = await admin.http.post("/sign-out", data=admin.form())
    assert response.status_code == 303 and response.headers["location"] == "/sign-in"
    admin.http.cookies.clear()
    admin.http.cookies.set(COOKIE_NAME, cookie)
    assert (await admin.http.get("/models")).status_code == 303


async def test_csrf_token_is_required_on_every_form(admin: SignedIn) -> None:
    """A signed-in POST without the CSRF token, with a wrong one, or from another origin: 403."""
    missing = await admin.http.post("/api-keys", data={"name": "x"})
    wrong = await admin.http.post("/api-keys", data={"name": "x", "csrf_token": "nope"})
    foreign = await admin.http.post("/api-keys", data=admin.form(name="x"),
                                    headers={"Origin": "https://evil.example"})
    for response in (missing, wrong, foreign):
        assert response.status_code == 403
        assert "reload the page" in response.text
    page = await admin.http.get("/api-keys")
    assert "No API keys" in page.text, "none of the refused forms created a key"


async def test_change_password_signs_out_other_sessions(console: Console,
                                                         admin: SignedIn) -> None:
    """A password change needs the current password; afterwards only the new one signs in, and
    sessions made with the old one end (the one that changed it continues)."""
    async with httpx.AsyncClient(base_url=console.base_url) as other_http:
        other = await sign_in(other_http)
        bad = await admin.http.post("/account", data=admin.form(
            current_password="wrong", new_password="new password 1",
            confirm_password="new password 1"))
        assert bad.status_code == 400 and "not correct" in bad.text
        mismatch = await admin.http.post("/account", data=admin.form(
            current_password=PASSWORD, new_password="new password 1",
            confirm_password="new password 2"))
        assert mismatch.status_code == 400 and "differ" in mismatch.text
        changed = await admin.http.post("/account", data=admin.form(
            current_password=PASSWORD, new_password="new password 1",
            confirm_password="new password 1"))
        assert changed.status_code == 303
        assert (await admin.http.get("/account")).status_code == 200
        assert (await other.http.get("/account")).status_code == 303
    async with httpx.AsyncClient(base_url=console.base_url) as fresh:
        assert (await fresh.post("/sign-in", data={"name": "admin", "password": PASSWORD})).status_code == 401
        await sign_in(fresh, "new password 1")


async def test_secret_is_kept_private_under_pendra_home(console: Console,
                                                         admin: SignedIn) -> None:
    """The signing secret is made once, 0600, in PENDRA_HOME, so sessions survive a restart."""
    path = console.settings.home.root / auth.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert auth.load_secret(path) == auth.load_secret(path)
    assert path.read_text() == first

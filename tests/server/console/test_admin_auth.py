"""``require_admin``: the admin token and a console session (with CSRF) both open the admin API."""

from __future__ import annotations

import httpx

from .conftest import Console, SignedIn


async def test_no_credential_is_401(client: httpx.AsyncClient) -> None:
    """Without a token or a session the installs API answers 401."""
    assert (await client.get("/api/v1/installs")).status_code == 401


async def test_admin_token_still_works(console: Console, client: httpx.AsyncClient) -> None:
    """The CLI's per-start admin token opens the API, with no CSRF token needed."""
    headers = {"Authorization": f"Bearer {console.settings.admin_token}"}
    assert (await client.get("/api/v1/installs", headers=headers)).status_code == 200
    response = await client.post("/api/v1/installs", headers=headers,
                                 json={"model": "no-such-model", "worker": "nobody"})
    assert response.status_code == 404


async def test_console_session_opens_the_installs_api(admin: SignedIn) -> None:
    """A signed-in browser can read installs with its cookie alone."""
    response = await admin.http.get("/api/v1/installs")
    assert response.status_code == 200 and response.json()["object"] == "list"


async def test_session_writes_need_the_csrf_header(admin: SignedIn) -> None:
    """POST with only the cookie is 403; with X-CSRF-Token it passes auth (and fails later, on the
    unknown model, with 404)."""
    body = {"model": "no-such-model", "worker": "nobody"}
    refused = await admin.http.post("/api/v1/installs", json=body)
    assert refused.status_code == 403
    wrong = await admin.http.post("/api/v1/installs", json=body, headers={"X-CSRF-Token": "x"})
    assert wrong.status_code == 403
    allowed = await admin.http.post("/api/v1/installs", json=body,
                                    headers={"X-CSRF-Token": admin.csrf})
    assert allowed.status_code == 404


async def test_a_wrong_bearer_token_does_not_hide_a_session(admin: SignedIn) -> None:
    """An unrelated Authorization header does not stop a valid session from being used."""
    response = await admin.http.get("/api/v1/installs",
                                    headers={"Authorization": "Bearer pdr_sk_nope"})
    assert response.status_code == 200

"""People and roles, through a real control plane: invites, sign-in by name, what a member may and
may not do in the console and the admin API, disabling and removing users, and the audit log."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from pendra.server.store import audit as audit_store
from pendra.server.store import keys as key_store
from pendra.server.store import users as user_store

from .conftest import CSRF_ATTRIBUTE, HTTP_TIMEOUT_S, Console, SignedIn, sign_in

RAW_KEY = re.compile(r"pdr_sk_[A-Za-z0-9_-]{43}")
MEMBER_PASSWORD = "a member's own password"


async def _invite(console: Console, name: str, role: str = "member") -> tuple[str, str]:
    async with console.store.session() as session:
        row, password = await user_store.add_user(session, name, role)
        await session.commit()
    return row.id, password


async def _signed_in_member(console: Console, http: httpx.AsyncClient,
                            name: str = "mia@example.com") -> tuple[SignedIn, str]:
    """Invite a member, sign in with the one-time password, choose a password; (session, id)."""
    user_id, once = await _invite(console, name)
    first = await http.post("/sign-in", data={"name": name, "password": once, "next": "/models"})
    assert first.status_code == 303 and first.headers["location"] == "/account"
    account = await http.get("/account")
    assert "Choose your own to continue" in account.text
    csrf = CSRF_ATTRIBUTE.search(account.text).group(1)  # type: ignore[union-attr]
    # Until then every other page sends them back to Account.
    assert (await http.get("/models")).headers["location"] == "/account"
    changed = await http.post("/account", data={
        "csrf_token": csrf, "current_password": once, "new_password": MEMBER_PASSWORD,
        "confirm_password": MEMBER_PASSWORD})
    assert changed.status_code == 303
    return await sign_in(http, MEMBER_PASSWORD, name), user_id


@pytest.fixture
async def member(console: Console) -> tuple[SignedIn, str]:
    http = httpx.AsyncClient(base_url=console.base_url, timeout=HTTP_TIMEOUT_S,
                             follow_redirects=False)
    try:
        yield await _signed_in_member(console, http)
    finally:
        await http.aclose()


async def _actions(console: Console) -> list[str]:
    async with console.store.session() as session:
        return [row.action for row in await audit_store.list_audit(session)]


async def test_invite_sign_in_own_key_and_the_openai_sdk(console: Console,
                                                         member: tuple[SignedIn, str]) -> None:
    """An invited member signs in by name, makes their own key in the console, and the official
    SDK uses it; the key is theirs, listed with their name, and its creation is audited."""
    signed_in, user_id = member
    created = await signed_in.http.post("/api-keys", data=signed_in.form(name="laptop"))
    assert created.status_code == 201
    raw = RAW_KEY.search(created.text).group(0)  # type: ignore[union-attr]
    client = openai.AsyncOpenAI(base_url=console.base_url + "/v1", api_key=raw)
    try:
        assert (await client.models.list()).data == []
    finally:
        await client.close()
    async with console.store.session() as session:
        row = await key_store.authenticate(session, raw)
    assert row is not None and row.user_id == user_id
    listing = await signed_in.http.get("/api-keys")
    assert 'data-field="owner">mia@example.com<' in listing.text
    assert "Limits</button>" not in listing.text  # limits are an owner's
    assert "key.created" in await _actions(console)
    assert "password.changed" in await _actions(console)


async def test_member_sees_only_their_own_keys_and_cannot_revoke_others(
        console: Console, admin: SignedIn, member: tuple[SignedIn, str]) -> None:
    """The owner's key is not on a member's page, and revoking it by id is a 403 naming the
    owner role, in the console and in the admin API; it keeps working."""
    signed_in, _ = member
    made = await admin.http.post("/api-keys", data=admin.form(name="owners key"))
    raw = RAW_KEY.search(made.text).group(0)  # type: ignore[union-attr]
    async with console.store.session() as session:
        key_id = (await key_store.authenticate(session, raw)).id  # type: ignore[union-attr]
    page = await signed_in.http.get("/api-keys")
    assert "owners key" not in page.text and key_id not in page.text
    refused = await signed_in.http.post(f"/api-keys/{key_id}/revoke", data=signed_in.form())
    assert refused.status_code == 403 and "Only an owner may revoke" in refused.text
    api = await signed_in.http.post("/api/v1/keys/revoke", json={"key": key_id},
                                    headers={"X-CSRF-Token": signed_in.csrf})
    assert api.status_code == 403 and "only an owner may" in api.json()["error"]["message"]
    bearer = {"Authorization": f"Bearer {raw}"}
    assert (await admin.http.get("/v1/models", headers=bearer)).status_code == 200
    owner_page = await admin.http.get("/api-keys")
    assert "owners key" in owner_page.text


OWNER_ONLY_FORMS = [
    ("/models/install", {"model": "llama3.2", "worker": "nobody"}),
    ("/installs/op_x/cancel", {}),
    ("/workers/wrk-x/models/remove", {"model": "m:1b"}),
    ("/workers", {"name": "sneaky"}),
    ("/workers/wrk-x/remove", {}),
    ("/api-keys/key_x/limits", {"rpm": "5"}),
    ("/api-keys", {"name": "limited", "rpm": "5"}),
    ("/users", {"name": "friend", "role": "owner"}),
    ("/users/{owner}/disable", {}),
    ("/users/{owner}/enable", {}),
    ("/users/{owner}/remove", {}),
    ("/users/{owner}/role", {"role": "member"}),
    ("/users/{owner}/reset-password", {}),
]


async def test_member_gets_403_on_every_owner_only_form(console: Console,
                                                       member: tuple[SignedIn, str]) -> None:
    """Every owner-only console action refuses a member server-side with a page naming the role,
    and changes nothing (no worker, user or key appears; the owner is untouched)."""
    signed_in, _ = member
    async with console.store.session() as session:
        owner = await user_store.first_owner(session)
    assert owner is not None
    for path, fields in OWNER_ONLY_FORMS:
        response = await signed_in.http.post(path.format(owner=owner.id),
                                             data=signed_in.form(**fields))
        assert response.status_code == 403, path
        assert "Only an owner may" in response.text, path
    for path in ("/users", "/audit"):
        page = await signed_in.http.get(path)
        assert page.status_code == 403 and "Only an owner may" in page.text
    async with console.store.session() as session:
        assert [u.name for u in await user_store.list_users(session)] == ["admin",
                                                                           "mia@example.com"]
        assert await key_store.list_keys(session) == []
        owner_now = await user_store.first_owner(session)
    assert owner_now is not None and owner_now.role == "owner" and not owner_now.disabled
    nav = await signed_in.http.get("/workers")
    assert 'href="/users"' not in nav.text and 'data-open="add-worker"' not in nav.text


OWNER_ONLY_ENDPOINTS = [
    ("POST", "/api/v1/installs", {"model": "llama3.2", "worker": "nobody"}),
    ("POST", "/api/v1/installs/op_x/cancel", None),
    ("DELETE", "/api/v1/workers/wrk-x/models/m:1b", None),
    ("POST", "/api/v1/keys/update", {"key": "key_x", "rpm": 5}),
    ("POST", "/api/v1/keys", {"name": "limited", "rpm": 5}),
    ("POST", "/api/v1/keys", {"name": "for admin", "user": "admin"}),
    ("GET", "/api/v1/users", None),
    ("POST", "/api/v1/users", {"name": "friend", "role": "member"}),
    ("POST", "/api/v1/users/disable", {"user": "admin"}),
    ("POST", "/api/v1/users/enable", {"user": "admin"}),
    ("POST", "/api/v1/users/remove", {"user": "admin"}),
    ("POST", "/api/v1/users/role", {"user": "admin", "role": "member"}),
    ("GET", "/api/v1/audit", None),
]


async def test_member_gets_403_on_every_owner_only_endpoint(console: Console, client: httpx.AsyncClient,
                                                            member: tuple[SignedIn, str]) -> None:
    """The admin API enforces the same roles for a member's session (JSON error naming the role);
    the admin token acts as an owner; a member may make and revoke their own keys there."""
    signed_in, user_id = member
    headers = {"X-CSRF-Token": signed_in.csrf}
    for method, path, body in OWNER_ONLY_ENDPOINTS:
        response = await signed_in.http.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["message"].startswith("only an owner may"), path
    own = await signed_in.http.post("/api/v1/keys", json={"name": "mine"}, headers=headers)
    assert own.status_code == 201 and own.json()["user_id"] == user_id
    gone = await signed_in.http.post("/api/v1/keys/revoke", json={"key": own.json()["id"]},
                                     headers=headers)
    assert gone.status_code == 200 and gone.json()["revoked_at"]
    token = {"Authorization": f"Bearer {console.settings.admin_token}"}
    listed = await client.get("/api/v1/users", headers=token)
    assert listed.status_code == 200
    assert {u["name"] for u in listed.json()["data"]} == {"admin", "mia@example.com"}


async def test_disabled_users_session_ends_on_its_next_request(console: Console, admin: SignedIn,
                                                               member: tuple[SignedIn, str]) -> None:
    """Disabling a member from the Users page ends their session on their very next request,
    revokes their keys at once, and enabling them lets them sign in again (keys stay revoked)."""
    signed_in, user_id = member
    made = await signed_in.http.post("/api-keys", data=signed_in.form(name="soon gone"))
    raw = RAW_KEY.search(made.text).group(0)  # type: ignore[union-attr]
    bearer = {"Authorization": f"Bearer {raw}"}
    assert (await signed_in.http.get("/v1/models", headers=bearer)).status_code == 200
    users_page = await admin.http.get("/users")
    assert "mia@example.com" in users_page.text and "1 live API key(s) are revoked" in users_page.text
    done = await admin.http.post(f"/users/{user_id}/disable", data=admin.form())
    assert done.status_code == 303
    assert (await signed_in.http.get("/models")).headers["location"].startswith("/sign-in")
    assert (await signed_in.http.get("/v1/models", headers=bearer)).status_code == 401
    refused = await signed_in.http.post("/sign-in", data={"name": "mia@example.com",
                                                          "password": MEMBER_PASSWORD})
    assert refused.status_code == 401
    assert (await admin.http.post(f"/users/{user_id}/enable", data=admin.form())).status_code == 303
    await sign_in(signed_in.http, MEMBER_PASSWORD, "mia@example.com")
    assert (await signed_in.http.get("/v1/models", headers=bearer)).status_code == 401
    assert {"user.disabled", "user.enabled"} <= set(await _actions(console))


async def test_removed_users_keys_are_revoked_and_handed_to_the_owner(
        console: Console, admin: SignedIn, member: tuple[SignedIn, str]) -> None:
    """Removing a user ends their session, revokes their keys and makes them the owner's."""
    signed_in, user_id = member
    made = await signed_in.http.post("/api-keys", data=signed_in.form(name="theirs"))
    raw = RAW_KEY.search(made.text).group(0)  # type: ignore[union-attr]
    done = await admin.http.post(f"/users/{user_id}/remove", data=admin.form())
    assert done.status_code == 303
    assert (await signed_in.http.get("/api-keys")).status_code == 303
    assert (await admin.http.get("/v1/models",
                                 headers={"Authorization": f"Bearer {raw}"})).status_code == 401
    async with console.store.session() as session:
        owner = await user_store.first_owner(session)
        keys = await key_store.list_keys(session)
    assert owner is not None and [(k.name, k.user_id, k.revoked) for k in keys] == [
        ("theirs", owner.id, True)]
    page = await admin.http.get("/api-keys")
    assert 'data-field="owner">admin<' in page.text


async def test_owner_invites_from_the_console_and_audit_lists_every_action(
        console: Console, admin: SignedIn, client: httpx.AsyncClient) -> None:
    """An owner adds a user (one-time password shown once), changes their role, adds and removes
    a worker, makes a key with limits and changes them, revokes it; the Audit page and the admin
    API list each action with who and from where, and never a secret."""
    added = await admin.http.post("/users", data=admin.form(name="bob", role="member"))
    assert added.status_code == 201 and added.headers["cache-control"] == "no-store"
    once = re.search(r'id="new-user-password"[^>]*value="([^"]+)"', added.text)
    assert once, "the one-time password is on the page"
    async with console.store.session() as session:
        bob = await user_store.find_user(session, "bob")
    assert (await admin.http.post(f"/users/{bob.id}/role",
                                  data=admin.form(role="owner"))).status_code == 303
    assert (await admin.http.post(f"/users/{bob.id}/role",
                                  data=admin.form(role="member"))).status_code == 303
    worker = await admin.http.post("/workers", data=admin.form(name="gpu-9"))
    assert worker.status_code == 201
    worker_id = re.search(r"wrk-[0-9a-f]+", worker.text).group(0)  # type: ignore[union-attr]
    assert (await admin.http.post(f"/workers/{worker_id}/remove",
                                  data=admin.form())).status_code == 303
    made = await admin.http.post("/api-keys", data=admin.form(name="limited", rpm="7",
                                                                user=bob.id))
    assert made.status_code == 201
    raw = RAW_KEY.search(made.text).group(0)  # type: ignore[union-attr]
    async with console.store.session() as session:
        key = await key_store.authenticate(session, raw)
    assert key is not None and key.user_id == bob.id and key.rpm == 7
    assert (await admin.http.post(f"/api-keys/{key.id}/limits",
                                  data=admin.form(rpm="9"))).status_code == 303
    assert (await admin.http.post(f"/api-keys/{key.id}/revoke",
                                  data=admin.form())).status_code == 303
    failed = await client.post("/sign-in", data={"name": "bob", "password": "wrong password"})
    assert failed.status_code == 401
    expected = ["user.added", "user.role_changed", "user.role_changed", "worker.added",
                "worker.removed", "key.created", "key.limits_changed", "key.revoked",
                "sign_in.failed"]
    assert list(reversed(await _actions(console))) == expected
    page = await admin.http.get("/audit")
    assert page.status_code == 200
    for action in expected:
        assert f'data-action="{action}"' in page.text
    assert "127.0.0.1" in page.text and "gpu-9" in page.text and "member → owner" in page.text
    assert raw not in page.text and once.group(1) not in page.text
    token = {"Authorization": f"Bearer {console.settings.admin_token}"}
    api = await client.get("/api/v1/audit", headers=token)
    rows = api.json()["data"]
    assert [r["action"] for r in rows] == list(reversed(expected))
    assert rows[-1]["actor"] == "admin" and rows[-1]["address"] == "127.0.0.1"
    assert rows[0]["actor"] == "bob"  # who tried, as typed; never the password


async def test_users_keep_an_owner_and_cannot_remove_themselves(console: Console,
                                                               admin: SignedIn) -> None:
    """An owner cannot disable, remove or demote themselves (another owner must)."""
    async with console.store.session() as session:
        owner = await user_store.first_owner(session)
    assert owner is not None
    for action, fields in (("disable", {}), ("remove", {}), ("role", {"role": "member"})):
        response = await admin.http.post(f"/users/{owner.id}/{action}", data=admin.form(**fields))
        assert response.status_code == 303
        page = await admin.http.get("/users")
        assert "yourself" in page.text, action
    async with console.store.session() as session:
        again = await user_store.first_owner(session)
    assert again is not None and again.id == owner.id and again.role == "owner"


async def test_the_admin_api_manages_users_with_the_admin_token(console: Console,
                                                                client: httpx.AsyncClient) -> None:
    """``/api/v1/users`` with the admin token (an owner): add (password once, no-store), role,
    disable (keys revoked), enable, remove; a key made for the user through ``/api/v1/keys``;
    the audit log names the admin token for each."""
    token = {"Authorization": f"Bearer {console.settings.admin_token}"}
    added = await client.post("/api/v1/users", json={"name": "carl", "role": "member"},
                              headers=token)
    assert added.status_code == 201 and added.headers["cache-control"] == "no-store"
    assert added.json()["must_change_password"] and len(added.json()["password"]) == 16
    key = await client.post("/api/v1/keys", json={"name": "carl's", "user": "carl"},
                            headers=token)
    assert key.status_code == 201 and key.json()["user_id"] == added.json()["id"]
    role = await client.post("/api/v1/users/role", json={"user": "carl", "role": "owner"},
                             headers=token)
    assert role.json()["role"] == "owner"
    disabled = await client.post("/api/v1/users/disable", json={"user": "carl"}, headers=token)
    assert disabled.json()["revoked_keys"] == [key.json()["id"]]
    bearer = {"Authorization": f"Bearer {key.json()['key']}"}
    assert (await client.get("/v1/models", headers=bearer)).status_code == 401
    enabled = await client.post("/api/v1/users/enable", json={"user": "carl"}, headers=token)
    assert enabled.json()["disabled_at"] is None
    removed = await client.post("/api/v1/users/remove", json={"user": "carl"}, headers=token)
    assert removed.json()["removed"] is True
    missing = await client.post("/api/v1/users/remove", json={"user": "carl"}, headers=token)
    assert missing.status_code == 404
    bad = await client.post("/api/v1/users", json={"name": "x", "role": "boss"}, headers=token)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "role"
    rows = (await client.get("/api/v1/audit", headers=token)).json()["data"]
    assert [r["action"] for r in reversed(rows)] == [
        "user.added", "key.created", "user.role_changed", "user.disabled", "user.enabled",
        "user.removed"]
    assert {r["actor"] for r in rows} == {"admin token"}
    assert "keys handed to admin" in rows[0]["detail"]


async def test_an_owner_resets_a_members_password(console: Console, admin: SignedIn,
                                                  member: tuple[SignedIn, str]) -> None:
    """Reset password shows a new one-time password once; the member's session ends at once, the
    old password no longer signs in, and the new one leads to Account to choose their own."""
    signed_in, user_id = member
    reset = await admin.http.post(f"/users/{user_id}/reset-password", data=admin.form())
    assert reset.status_code == 200 and reset.headers["cache-control"] == "no-store"
    once = re.search(r'id="new-user-password"[^>]*value="([^"]+)"', reset.text)
    assert once and "New password for mia@example.com" in reset.text
    assert (await signed_in.http.get("/api-keys")).headers["location"].startswith("/sign-in")
    old = await signed_in.http.post("/sign-in", data={"name": "mia@example.com",
                                                      "password": MEMBER_PASSWORD})
    assert old.status_code == 401
    again = await signed_in.http.post("/sign-in", data={"name": "mia@example.com",
                                                        "password": once.group(1)})
    assert again.status_code == 303 and again.headers["location"] == "/account"
    assert "user.password_reset" in await _actions(console)


async def test_a_member_sees_and_exports_only_their_own_usage(console: Console, admin: SignedIn,
                                                              member: tuple[SignedIn, str]) -> None:
    """Usage of the owner's key and of the member's key: the member's Usage page and CSV export
    hold only their own requests; the owner's hold both, with whose key each is."""
    from pendra.server.store import usage as usage_store

    signed_in, user_id = member
    async with console.store.session() as session:
        owner = await user_store.first_owner(session)
        assert owner is not None
        theirs, _ = await key_store.create_key(session, "member key", user_id=user_id)
        ours, _ = await key_store.create_key(session, "owner key", user_id=owner.id)
        for key, request_id in ((theirs, "req-member"), (ours, "req-owner")):
            await usage_store.record_usage(session, usage_store.UsageRecord(
                request_id=request_id, kind="chat", model_requested="m", model_served="m",
                key_id=key.id, status=200, latency_ms=5, prompt_tokens=1, completion_tokens=2))
        await session.commit()
    mine = await signed_in.http.get("/usage")
    assert "member key" in mine.text and "owner key" not in mine.text
    assert "Requests with your own API keys" in mine.text
    csv = await signed_in.http.get("/api/v1/usage/export")
    assert csv.status_code == 200
    assert "req-member" in csv.text and "req-owner" not in csv.text
    everyone = await admin.http.get("/usage")
    assert "member key" in everyone.text and "owner key" in everyone.text
    assert "mia@example.com" in everyone.text  # the key's owner, in the per-key table
    full = await admin.http.get("/api/v1/usage/export")
    assert "req-member" in full.text and "req-owner" in full.text

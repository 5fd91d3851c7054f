"""The console's forms change the store: API keys and workers, each secret shown once."""

from __future__ import annotations

import html
import re
import shlex

from pendra.protocol import signing
from pendra.server.store import keys as key_store
from pendra.server.store import workers as worker_store

from .conftest import Console, SignedIn

RAW_KEY = re.compile(r"pdr_sk_[A-Za-z0-9_-]{43}")


async def test_create_key_shows_it_once_and_it_authenticates(console: Console,
                                                             admin: SignedIn) -> None:
    """Creating a key renders it once (not cached) and it works on the very next API request; the
    list afterwards shows only its prefix."""
    response = await admin.http.post("/api-keys", data=admin.form(name="ci pipeline"))
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    raw = RAW_KEY.search(response.text)
    assert raw, "the new key is on the page"
    async with console.store.session() as session:
        row = await key_store.authenticate(session, raw.group(0))
    assert row is not None and row.name == "ci pipeline"
    models = await admin.http.get("/v1/models", headers={"Authorization": f"Bearer {raw.group(0)}"})
    assert models.status_code == 200
    listing = await admin.http.get("/api-keys")
    assert "ci pipeline" in listing.text and row.prefix in listing.text
    assert raw.group(0) not in listing.text


async def test_create_key_without_a_name_says_why(admin: SignedIn) -> None:
    """A blank name is refused with the store's reason, on the same page."""
    response = await admin.http.post("/api-keys", data=admin.form(name="   "))
    assert response.status_code == 400
    assert "a key needs a name" in response.text


async def test_revoke_key_stops_it_at_once(console: Console, admin: SignedIn) -> None:
    """Revoking from the list ends the key immediately (the very next API request with it is 401)
    and says so."""
    created = await admin.http.post("/api-keys", data=admin.form(name="old"))
    raw = RAW_KEY.search(created.text).group(0)  # type: ignore[union-attr]
    bearer = {"Authorization": f"Bearer {raw}"}
    assert (await admin.http.get("/v1/models", headers=bearer)).status_code == 200
    async with console.store.session() as session:
        key_id = (await key_store.authenticate(session, raw)).id  # type: ignore[union-attr]
        await session.commit()
    response = await admin.http.post(f"/api-keys/{key_id}/revoke", data=admin.form())
    assert response.status_code == 303 and response.headers["location"] == "/api-keys"
    assert (await admin.http.get("/v1/models", headers=bearer)).status_code == 401
    async with console.store.session() as session:
        assert await key_store.authenticate(session, raw) is None
    page = await admin.http.get("/api-keys")
    assert "Revoked old" in page.text and "Revoked" in page.text
    again = await admin.http.get("/api-keys")
    assert "Revoked old" not in again.text, "the notice is shown once"


async def test_add_worker_shows_its_key_and_command_once(console: Console,
                                                          admin: SignedIn) -> None:
    """Adding a worker enrols its public key and shows the private key and the exact command."""
    response = await admin.http.post("/workers", data=admin.form(name="gpu box"))
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    command = re.search(r"<pre[^>]*data-command>([^<]+)</pre>", response.text)
    assert command
    words = shlex.split(html.unescape(command.group(1)))
    env = dict(word.split("=", 1) for word in words if "=" in word)
    assert words[-2:] == ["pendra", "worker"]
    assert env["APP_SERVER_WS_URL"] == "ws" + console.base_url[len("http"):]
    assert env["WORKER_NAME"] == "gpu box"
    async with console.store.session() as session:
        row = await worker_store.get_worker(session, env["WORKER_ID"])
    assert row is not None and row.name == "gpu box"
    assert signing.public_key_of(env["GPU_WORKER_PRIVATE_KEY"]) == row.public_key
    listing = await admin.http.get("/workers")
    assert "gpu box" in listing.text and env["GPU_WORKER_PRIVATE_KEY"] not in listing.text
    assert "Offline" in listing.text


async def test_add_worker_with_a_taken_name_is_refused(admin: SignedIn) -> None:
    """Names are unique; the conflict is shown on the Workers page."""
    await admin.http.post("/workers", data=admin.form(name="twin"))
    response = await admin.http.post("/workers", data=admin.form(name="twin"))
    assert response.status_code == 409
    assert "already enrolled" in response.text


async def test_remove_worker_deletes_it(console: Console, admin: SignedIn) -> None:
    """Removing a worker deletes its row; the page says so once."""
    await admin.http.post("/workers", data=admin.form(name="short lived"))
    async with console.store.session() as session:
        row = next(w for w in await worker_store.list_workers(session) if w.name == "short lived")
    response = await admin.http.post(f"/workers/{row.id}/remove", data=admin.form())
    assert response.status_code == 303
    async with console.store.session() as session:
        assert await worker_store.get_worker(session, row.id) is None
    page = await admin.http.get("/workers")
    assert "Removed worker short lived" in page.text

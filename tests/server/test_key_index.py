"""The in-memory key index: authentication without I/O, changes made here counted on the next
request, changes made elsewhere in the store picked up by the sync, garbage keys kept off the
store."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
from sqlalchemy import event
from store_targets import Target, pg_schema, store, target  # noqa: F401  (fixtures)

from api_fixtures import ADMIN_TOKEN, TIMEOUT_S, Api
from pendra.server.key_index import KeyIndex
from pendra.server.store import keys
from pendra.server.store.db import Store
from polling import eventually

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Short, so the sync's effect shows quickly; the default is SYNC_INTERVAL_S.
FAST_SYNC_S = 0.05


def garbage_key() -> str:
    """A key of the right shape that no one ever made."""
    return keys.KEY_PREFIX + secrets.token_urlsafe(keys.KEY_RANDOM_BYTES)


async def status_with(api: Api, client: httpx.AsyncClient, key: str) -> int:
    response = await client.get("/api/v1/models", headers={"Authorization": f"Bearer {key}"})
    return response.status_code


async def test_the_index_answers_from_memory_and_follows_its_own_changes_at_once(
        store: Store) -> None:
    """``create`` is accepted and ``revoke`` refused by the very next ``authenticate`` (no sync in
    between: the sync interval is an hour); an unknown or malformed key is refused."""
    async with KeyIndex(store, sync_interval_s=3600) as index:
        row, raw = await index.create("laptop")
        found = index.authenticate(raw)
        assert found is not None and (found.id, found.name) == (row.id, "laptop")
        assert index.authenticate(garbage_key()) is None
        assert index.authenticate("pdr_sk_" + "x" * 200) is None
        assert index.authenticate("not-a-key") is None
        await index.revoke(row.prefix)
        assert index.authenticate(raw) is None


async def test_changes_made_by_another_control_plane_reach_the_index_through_the_store(
        store: Store, target: Target) -> None:
    """A key created, then revoked, through a second Store on the same database (another control
    plane sharing PostgreSQL, or ``pendra keys`` writing SQLite directly) is accepted, then
    refused, after the next sync; a sync that finds the table unchanged does not read it."""
    async with KeyIndex(store, sync_interval_s=FAST_SYNC_S) as index:
        elsewhere = await target.open()
        try:
            row, raw = await elsewhere.change(lambda db: keys.create_key(db, "elsewhere"))
            await eventually(lambda: index.authenticate(raw), what="the new key accepted")
            reloads = index.reloads
            await asyncio.sleep(FAST_SYNC_S * 4)
            assert index.reloads == reloads, "an unchanged table is not read again"
            await elsewhere.change(lambda db: keys.revoke_key(db, row.id))
            await eventually(lambda: index.authenticate(raw) is None, what="the key refused")
        finally:
            await elsewhere.close()


async def test_a_reload_overtaken_by_a_revocation_here_does_not_bring_the_key_back(
        store: Store) -> None:
    """A reload of the table running while this process revokes a key is thrown away if it read
    the table before the revocation: the key stays refused (tried many times over)."""
    async with KeyIndex(store, sync_interval_s=3600) as index:
        for n in range(20):
            row, raw = await index.create(f"k{n}")
            reload = asyncio.create_task(index._reload())
            await asyncio.sleep(0)  # let the reload start reading
            await index.revoke(row.id)
            await reload
            assert index.authenticate(raw) is None
        assert await index.sync() is True, "a discarded reading is read again on the next sync"
        assert len(index) == 0


async def test_garbage_keys_never_reach_the_store(api: Api) -> None:
    """300 requests with random well-formed keys (32 at a time) are all 401, and the store sees
    no lookup by key hash, only the sync's few aggregate queries."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = api.app.state.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S) as client:
            gate = asyncio.Semaphore(32)

            async def one() -> int:
                async with gate:
                    return await status_with(api, client, garbage_key())

            codes = await asyncio.gather(*(one() for _ in range(300)))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert codes == [401] * 300
    assert not [s for s in statements if "api_keys.hash =" in s], statements
    assert len(statements) < 30, statements


async def test_keys_made_and_revoked_through_the_admin_api_count_on_the_next_request(
        api: Api) -> None:
    """``POST /api/v1/keys`` returns a key (not cached) that works at once; ``POST
    /api/v1/keys/revoke`` ends it at once; neither is open to an API key or to no credential."""
    async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S) as client:
        made = await client.post("/api/v1/keys", json={"name": "ci"}, headers=ADMIN)
        assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
        raw = made.json()["key"]
        assert made.json()["prefix"] == raw[:keys.PREFIX_CHARS]
        assert await status_with(api, client, raw) == 200
        for headers in ({}, {"Authorization": f"Bearer {api.key}"}):
            refused = await client.post("/api/v1/keys/revoke", json={"key": made.json()["id"]},
                                        headers=headers)
            assert refused.status_code == 401
            assert (await client.post("/api/v1/keys", json={"name": "x"},
                                      headers=headers)).status_code == 401
        revoked = await client.post("/api/v1/keys/revoke", json={"key": made.json()["id"]},
                                    headers=ADMIN)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert await status_with(api, client, raw) == 401
        missing = await client.post("/api/v1/keys/revoke", json={"key": "key_nosuchkey"},
                                    headers=ADMIN)
        assert missing.status_code == 404

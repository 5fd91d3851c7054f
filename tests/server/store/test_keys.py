"""API keys: shown once, stored as a hash, revocable at once."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from sqlalchemy import text

from pendra.errors import InvalidRequest, NotFound
from pendra.server.store import keys
from pendra.server.store.db import Store
from pendra.server.store.tables import utcnow

RAW_KEY = re.compile(r"^pdr_sk_[A-Za-z0-9_-]{43}$")


async def test_create_returns_the_raw_key_once_and_stores_only_its_hash(store: Store) -> None:
    """The raw key is ``pdr_sk_`` + 43 URL-safe characters; the row keeps its SHA-256 and prefix."""
    async with store.session() as session:
        row, raw = await keys.create_key(session, "  laptop  ")
        await session.commit()
    assert RAW_KEY.match(raw)
    assert re.fullmatch(r"key_[0-9a-f]{16}", row.id)
    assert row.name == "laptop"
    assert row.prefix == raw[:12] and row.prefix.startswith("pdr_sk_")
    assert row.hash == hashlib.sha256(raw.encode()).hexdigest()
    assert row.last_used_at is None and row.revoked_at is None
    async with store.engine.connect() as connection:
        stored = (await connection.execute(text("SELECT * FROM api_keys"))).one()
    assert not any(raw in str(value) for value in stored)


async def test_each_key_is_different(store: Store) -> None:
    """Two keys made with the same name still differ in id, prefix, hash and raw value."""
    async with store.session() as session:
        (a, raw_a), (b, raw_b) = [await keys.create_key(session, "same") for _ in range(2)]
        await session.commit()
    assert raw_a != raw_b and a.id != b.id and a.hash != b.hash


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "line\nbreak", "bell\x07"])
async def test_create_refuses_bad_names(store: Store, name: str) -> None:
    """A key name must be 1 to 100 printable characters once trimmed (the rule worker names
    follow too: store.tables.clean_name)."""
    async with store.session() as session:
        with pytest.raises(InvalidRequest, match="name"):
            await keys.create_key(session, name)


async def test_list_is_newest_first_and_includes_revoked(store: Store) -> None:
    """``list_keys`` shows every key, revoked ones too, the newest first."""
    async with store.session() as session:
        for name in ("first", "second", "third"):
            await keys.create_key(session, name)
        await session.commit()
        await keys.revoke_key(session, (await keys.list_keys(session))[-1].id)
        await session.commit()
    async with store.session() as session:
        listed = await keys.list_keys(session)
    assert [k.name for k in listed] == ["third", "second", "first"]
    assert [k.revoked for k in listed] == [False, False, True]


async def test_authenticate_accepts_only_live_known_keys(store: Store) -> None:
    """A live key authenticates; unknown, malformed and revoked keys give None."""
    async with store.session() as session:
        row, raw = await keys.create_key(session, "app")
        await session.commit()
    async with store.session() as session:
        found = await keys.authenticate(session, raw)
        assert found is not None and found.id == row.id
        assert await keys.authenticate(session, raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
        assert await keys.authenticate(session, "sk-not-ours") is None
        assert await keys.authenticate(session, "") is None
        assert await keys.authenticate(session, "pdr_sk_" + "x" * 500) is None


async def test_revocation_takes_effect_immediately(store: Store) -> None:
    """Once a revocation commits, the very next authentication of that key fails."""
    async with store.session() as session:
        row, raw = await keys.create_key(session, "app")
        await session.commit()
    async with store.session() as checker, store.session() as admin:
        assert await keys.authenticate(checker, raw) is not None
        await checker.commit()
        await keys.revoke_key(admin, row.id)
        await admin.commit()
        assert await keys.authenticate(checker, raw) is None


async def test_revoke_by_id_prefix_or_raw_key_is_idempotent(store: Store) -> None:
    """A key can be revoked by id, by prefix (as listed, with or without the ellipsis) or by its raw
    value; revoking again keeps the first revocation time."""
    async with store.session() as session:
        a, _ = await keys.create_key(session, "a")
        b, _ = await keys.create_key(session, "b")
        c, raw_c = await keys.create_key(session, "c")
        await session.commit()
        first = await keys.revoke_key(session, a.id)
        assert first.revoked_at is not None
        when = first.revoked_at
        await session.commit()
        again = await keys.revoke_key(session, a.id)
        assert again.revoked_at == when
        assert (await keys.revoke_key(session, b.prefix + "…")).id == b.id
        assert (await keys.revoke_key(session, raw_c)).id == c.id
        await session.commit()
    async with store.session() as session:
        assert all(k.revoked for k in await keys.list_keys(session))


async def test_revoke_unknown_key_is_not_found(store: Store) -> None:
    """Revoking something that matches no key raises NotFound."""
    async with store.session() as session:
        with pytest.raises(NotFound):
            await keys.revoke_key(session, "key_doesnotexist")


async def test_authenticate_writes_nothing_and_stamps_only_move_forward(store: Store) -> None:
    """Authenticating leaves the session clean; ``stamp_last_used`` moves ``last_used_at``
    forward, never back."""
    async with store.session() as session:
        row, raw = await keys.create_key(session, "busy")
        await session.commit()
    now = utcnow()
    async with store.session() as session:
        found = await keys.authenticate(session, raw)
        assert found is not None and found.last_used_at is None
        assert not session.dirty and not session.new
        await keys.stamp_last_used(session, {row.id: now, "key_missing": now})
        await session.commit()
    async with store.session() as session:
        await keys.stamp_last_used(session, {row.id: now - timedelta(hours=1)})
        await session.commit()
    async with store.session() as session:
        found = await keys.authenticate(session, raw)
        assert found is not None and found.last_used_at == now

"""Enrolled workers: unique names, valid public keys, removal."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import pytest

from pendra.errors import Conflict, InvalidRequest, NotFound
from pendra.server.store import usage, workers
from pendra.server.store.db import Store

KEY = base64.b64encode(bytes(range(32))).decode()
# 32 bytes whose base64 uses the URL-safe alphabet's "-" and "_".
URLSAFE_KEY = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode()


async def test_enrol_get_and_list(store: Store) -> None:
    """An enrolled worker gets a ``wrk-`` id (or keeps the one given) and is listed by name."""
    async with store.session() as session:
        made = await workers.enrol_worker(session, "zeta", KEY)
        await workers.enrol_worker(session, "alpha (local)", URLSAFE_KEY, worker_id="wrk-12345678")
        await session.commit()
    assert re.fullmatch(r"wrk-[0-9a-f]{8}", made.id)
    assert made.public_key == KEY and made.last_seen_at is None
    async with store.session() as session:
        got = await workers.get_worker(session, made.id)
        assert got is not None and got.name == "zeta"
        assert await workers.get_worker(session, "wrk-nothere") is None
        listed = await workers.list_workers(session)
    assert [(w.id, w.name) for w in listed] == \
        [("wrk-12345678", "alpha (local)"), (made.id, "zeta")]
    assert listed[0].public_key == URLSAFE_KEY  # kept exactly as given


async def test_duplicate_name_or_id_is_a_conflict(store: Store) -> None:
    """A second worker with a taken name, or a taken id, is refused with Conflict."""
    async with store.session() as session:
        await workers.enrol_worker(session, "gpu-1", KEY, worker_id="wrk-aaaaaaaa")
        await session.commit()
    async with store.session() as session:
        with pytest.raises(Conflict, match="name 'gpu-1'"):
            await workers.enrol_worker(session, "gpu-1", KEY)
    async with store.session() as session:
        with pytest.raises(Conflict, match="id 'wrk-aaaaaaaa'"):
            await workers.enrol_worker(session, "gpu-2", KEY, worker_id="wrk-aaaaaaaa")


@pytest.mark.parametrize("key", [
    "not base64!",
    base64.b64encode(bytes(31)).decode(),
    base64.b64encode(bytes(33)).decode(),
    "",
])
async def test_enrol_refuses_a_bad_public_key(store: Store, key: str) -> None:
    """The public key must be base64 of exactly 32 bytes."""
    async with store.session() as session:
        with pytest.raises(InvalidRequest, match="public key"):
            await workers.enrol_worker(session, "gpu", key)


@pytest.mark.parametrize("name", ["", "  ", "a\nb", "x" * 101])
async def test_enrol_refuses_a_bad_name(store: Store, name: str) -> None:
    """A worker name is 1 to 100 printable characters."""
    async with store.session() as session:
        with pytest.raises(InvalidRequest, match="name"):
            await workers.enrol_worker(session, name, KEY)


async def test_remove_by_id_or_name_keeps_usage_history(store: Store) -> None:
    """Removing deletes the row (by id or by name); NotFound after; its usage rows stay."""
    async with store.session() as session:
        a = await workers.enrol_worker(session, "a", KEY)
        await workers.enrol_worker(session, "b", KEY)
        await usage.record_usage(session, usage.UsageRecord(
            request_id="r", kind="embed", model_requested="m", worker_id=a.id, worker_name="a",
            status=200, latency_ms=5))
        await session.commit()
    async with store.session() as session:
        removed = await workers.remove_worker(session, a.id)
        assert removed.name == "a"
        assert (await workers.remove_worker(session, "b")).name == "b"
        await session.commit()
    async with store.session() as session:
        assert await workers.list_workers(session) == []
        with pytest.raises(NotFound):
            await workers.remove_worker(session, "a")
        assert [u.worker_name for u in await usage.recent_usage(session)] == ["a"]


async def test_remove_then_enrol_again_in_one_transaction(store: Store) -> None:
    """A worker can be removed and enrolled again with the same id and name before committing."""
    async with store.session() as session:
        await workers.enrol_worker(session, "local", KEY, worker_id="wrk-0000beef")
        await session.commit()
    async with store.session() as session:
        await workers.remove_worker(session, "wrk-0000beef")
        await workers.enrol_worker(session, "local", URLSAFE_KEY, worker_id="wrk-0000beef")
        await session.commit()
    async with store.session() as session:
        row = await workers.get_worker(session, "wrk-0000beef")
        assert row is not None and row.public_key == URLSAFE_KEY


async def test_touch_records_last_seen(store: Store) -> None:
    """``touch_worker`` sets ``last_seen_at``; touching a removed worker is harmless."""
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    async with store.session() as session:
        row = await workers.enrol_worker(session, "w", KEY)
        await session.commit()
        await workers.touch_worker(session, row.id, when)
        await workers.touch_worker(session, "wrk-gone", when)
        await session.commit()
    async with store.session() as session:
        got = await workers.get_worker(session, row.id)
        assert got is not None and got.last_seen_at == when

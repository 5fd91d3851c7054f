"""Stored Responses API answers: kept whole per API key until they expire, never shown to another
key, deleted on request or with their key; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select

from pendra.server.store import keys, responses
from pendra.server.store.db import Store
from pendra.server.store.tables import ApiKey, StoredResponse, utcnow

DAY = timedelta(days=1)
ITEMS = [{"id": "msg_1", "type": "message", "role": "user",
          "content": [{"type": "input_text", "text": "héllo \U0001f600"}]}]
ANSWER = {"id": "resp_1", "object": "response", "output": [{"type": "message", "content": []}]}


async def _key(store: Store, name: str) -> str:
    row, _ = await store.change(lambda s: keys.create_key(s, name))
    return row.id


async def _count(store: Store) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(StoredResponse)) or 0)


async def test_a_kept_response_comes_back_whole_to_its_key_only(store: Store,
                                                                target: object) -> None:
    """What is kept comes back as it was (Unicode included), in another Store on the same
    database too; another key sees nothing, nor does anyone once it is deleted."""
    mine, theirs = await _key(store, "mine"), await _key(store, "theirs")
    await store.change(lambda s: responses.keep_response(
        s, response_id="resp_1", key_id=mine, model="llama3.2:latest", input_items=ITEMS,
        response=ANSWER, retention=DAY))
    again = await target.open()  # type: ignore[attr-defined]
    try:
        async with again.session() as session:
            kept = await responses.get_response(session, "resp_1", mine)
            assert kept is not None
            assert (kept.input_items, kept.response) == (ITEMS, ANSWER)
            assert kept.expires_at - kept.created_at == DAY
            assert await responses.get_response(session, "resp_1", theirs) is None
            assert await responses.get_response(session, "resp_2", mine) is None
            assert await responses.get_response(session, "x" * 1000, mine) is None
    finally:
        await again.close()
    assert not await store.change(lambda s: responses.delete_response(s, "resp_1", theirs))
    assert await store.change(lambda s: responses.delete_response(s, "resp_1", mine))
    assert not await store.change(lambda s: responses.delete_response(s, "resp_1", mine))
    async with store.session() as session:
        assert await responses.get_response(session, "resp_1", mine) is None


async def test_expired_responses_are_invisible_and_pruned_on_write(store: Store) -> None:
    """A response past its retention is never returned, and the next write deletes it."""
    key = await _key(store, "k")
    past = utcnow() - 2 * DAY
    await store.change(lambda s: responses.keep_response(
        s, response_id="resp_old", key_id=key, model="m", input_items=[], response=ANSWER,
        retention=DAY, now=past))
    async with store.session() as session:
        assert await responses.get_response(session, "resp_old", key) is None
    assert not await store.change(lambda s: responses.delete_response(s, "resp_old", key))
    assert await _count(store) == 1
    await store.change(lambda s: responses.keep_response(
        s, response_id="resp_new", key_id=key, model="m", input_items=[], response=ANSWER,
        retention=DAY))
    assert await _count(store) == 1  # the old one went with this write


async def test_a_failed_write_keeps_nothing(store: Store) -> None:
    """A write that fails (here: the same id twice) leaves no row behind, not even half of one,
    and does not undo the prune's neighbours."""
    key = await _key(store, "k")
    await store.change(lambda s: responses.keep_response(
        s, response_id="resp_1", key_id=key, model="m", input_items=ITEMS, response=ANSWER,
        retention=DAY))
    try:
        await store.change(lambda s: responses.keep_response(
            s, response_id="resp_1", key_id=key, model="m", input_items=[], response={},
            retention=DAY))
    except Exception:  # noqa: BLE001 - the backend's integrity error, whichever it is
        pass
    else:
        raise AssertionError("a second row with the same id was accepted")
    async with store.session() as session:
        kept = await responses.get_response(session, "resp_1", key)
    assert kept is not None and kept.input_items == ITEMS
    assert await _count(store) == 1


async def test_deleting_a_key_deletes_its_responses(store: Store) -> None:
    key = await _key(store, "k")
    await store.change(lambda s: responses.keep_response(
        s, response_id="resp_1", key_id=key, model="m", input_items=[], response=ANSWER,
        retention=DAY))
    await store.change(lambda s: s.execute(delete(ApiKey).where(ApiKey.id == key)))
    assert await _count(store) == 0

"""The hub's index of who serves what (fleet_index.py): kept exact through attach, detach,
supersede, inventory changes and load changes, and equal to a full scan of the fleet after any
sequence of them."""

from __future__ import annotations

import random

import pytest

from hub_fakes import CHAT, EMBED, attach, hello, inventory, model, new_hub
from pendra.names import match, name_key
from pendra.protocol.close import CloseReason
from pendra.server.fleet_index import Members, load_key
from pendra.server.hub import Hub, WorkerLink, WorkerView
from pendra.server.routing import TYPE_FOR_KIND

BODY: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}]}


def test_members_add_discard_draw() -> None:
    """Members is a set (no duplicates, discard of a stranger is harmless) whose ``draw`` gives
    every member, and only members."""
    members = Members()
    for item in ("a", "b", "c", "a"):
        members.add(item)
    members.discard("b")
    members.discard("zz")
    assert len(members) == 2 and sorted(members) == ["a", "c"] and "b" not in members
    assert {members.draw() for _ in range(200)} == {"a", "c"}


async def test_attach_inventory_detach_keep_the_index_exact() -> None:
    """A worker is found by model once its inventory says so, by name key too, and is gone from
    every query once it detaches."""
    hub = new_hub()
    link = attach(hub, "wrk-a", model("Llama3.2:latest"), model("e:latest", EMBED))
    assert [w.id for w in hub.serving("Llama3.2:latest")] == ["wrk-a"]
    assert hub.index.resolve("llama3.2") == "Llama3.2:latest"
    assert [w.id for w in hub.index.serving("e:latest", "embedding")] == ["wrk-a"]
    assert hub.index.serving("e:latest", "chat") == []
    link.inventory(inventory(model("other:7b")))
    assert hub.serving("Llama3.2:latest") == [] and hub.index.resolve("llama3.2") is None
    assert hub.index.resolve("OTHER:7b") == "other:7b"
    hub.detach(link, "test")
    assert hub.serving("other:7b") == [] and hub.index.resolve("other:7b") is None
    assert hub.index.least_loaded("other:7b", None) is None


async def test_a_superseded_link_leaves_the_index_to_the_new_one() -> None:
    """After a reconnect the index holds the new connection's view; the old link's requests
    ending later do not disturb it."""
    hub = new_hub()
    old = attach(hub, "wrk-a", model("m:latest"), max_concurrent=2)
    handle = hub.open_request("wrk-a", "chat", "m:latest", BODY)
    new = hub.attach(hello("wrk-a", 2), "wrk-a")
    assert old.closed and hub.serving("m:latest") == []  # the new link has no inventory yet
    new.inventory(inventory(model("m:latest"), max_concurrent=2))
    await handle.aclose()  # the old view's in_flight moves; the index must ignore it
    assert hub.serving("m:latest") == [new.view]
    assert hub.index.least_loaded("m:latest", "chat") is new.view
    old.inventory(inventory(model("gone:latest")))  # a late frame on the dropped link
    assert hub.serving("gone:latest") == []


async def test_load_changes_move_the_pick() -> None:
    """The pick follows in_flight: a busy worker loses to an idle one, a full one is never
    picked, and setting in_flight directly is seen too."""
    hub = new_hub()
    attach(hub, "wrk-a", model("m:latest"), max_concurrent=2)
    attach(hub, "wrk-b", model("m:latest"), max_concurrent=1)
    handle = hub.open_request("wrk-b", "chat", "m:latest", BODY)
    assert hub.index.least_loaded("m:latest", None).id == "wrk-a"  # type: ignore[union-attr]
    hub.get("wrk-a").in_flight = 2  # type: ignore[union-attr]
    assert hub.index.least_loaded("m:latest", None) is None
    assert hub.index.has_candidate("m:latest", None)
    assert not hub.index.has_candidate("m:latest", None, exclude=["wrk-a", "wrk-b"])
    await handle.aclose()
    assert hub.index.least_loaded("m:latest", None).id == "wrk-b"  # type: ignore[union-attr]
    assert hub.index.least_loaded("m:latest", None, exclude=["wrk-b"]) is None


# --- the index against a full scan, over random operations -----------------------------------------

MODELS = ["m:latest", "M:latest", "library/m", "x/y:1b", "e:latest", "q:7b", "Q:7B", "z"]


def scan_resolve(hub: Hub, name: str) -> str | None:
    """The rule as a full scan: the exact id if served, else the least served id by name key."""
    served = {m for w in hub.connected() for m in w.models}
    if name in served:
        return name
    same = sorted(m for m in served if name_key(m) == name_key(name))
    return same[0] if same else None


def scan_free(hub: Hub, model_id: str, wanted: str | None, exclude: set[str]) -> list[WorkerView]:
    return [w for w in hub.connected() if model_id in w.models and w.id not in exclude
            and (wanted is None or wanted in w.models[model_id].types) and w.free > 0]


def check(hub: Hub, rng: random.Random) -> None:
    for model_id in MODELS:
        assert hub.index.resolve(model_id) == scan_resolve(hub, model_id)
        stranded = hub.index.stranded(model_id)
        holders = [w for w in hub.connected() if match(model_id, w.stranded) is not None]
        assert (stranded is None) == (not holders)
        if stranded is not None:
            assert stranded[0] in holders and stranded[1] == match(model_id, stranded[0].stranded)
        for wanted in (None, *TYPE_FOR_KIND.values()):
            expected = {w.id for w in hub.connected() if model_id in w.models
                        and (wanted is None or wanted in w.models[model_id].types)}
            assert {w.id for w in hub.index.serving(model_id, wanted)} == expected
            exclude = set(rng.sample(sorted(expected), k=min(len(expected), rng.randint(0, 2))))
            free = scan_free(hub, model_id, wanted, exclude)
            chosen = hub.index.least_loaded(model_id, wanted, exclude)
            if not free:
                assert chosen is None
            else:
                assert chosen is not None and chosen in free
                assert load_key(chosen) == min(load_key(w) for w in free)
            assert hub.index.has_candidate(model_id, wanted, exclude) == bool(expected - exclude)


@pytest.mark.parametrize("seed", range(6))
async def test_the_index_matches_a_full_scan_after_random_operations(seed: int) -> None:
    """Over 300 random attaches, reconnects, inventories (with backends going down and models
    stranded), requests opened and closed, and detaches, every query of the index answers what a
    full scan of the connected workers answers."""
    rng = random.Random(seed)
    hub = new_hub()
    links: dict[str, WorkerLink] = {}
    handles: list = []
    for _step in range(300):
        op = rng.choice(["attach", "attach", "inventory", "inventory", "open", "open", "close",
                         "detach", "disconnect"])
        worker_id = f"wrk-{rng.randint(0, 11)}"
        if op == "attach":
            concurrency = rng.randint(1, 4)
            links[worker_id] = hub.attach(hello(worker_id, concurrency), worker_id)
        elif op == "inventory" and worker_id in links:
            chosen = rng.sample(MODELS, k=rng.randint(0, 4))
            models = [model(m, rng.choice([CHAT, EMBED, CHAT + EMBED])) for m in chosen]
            links[worker_id].inventory(inventory(*models, max_concurrent=rng.randint(1, 4),
                                                 verified=rng.random() > 0.2))
        elif op == "open":
            candidates = [w for w in hub.connected() if w.models and w.free > 0]
            if candidates:
                worker = rng.choice(candidates)
                handles.append(hub.open_request(worker.id, "chat", next(iter(worker.models)),
                                                BODY))
        elif op == "close" and handles:
            await handles.pop(rng.randrange(len(handles))).aclose()
        elif op == "detach" and worker_id in links:
            hub.detach(links.pop(worker_id), "test")
        elif op == "disconnect" and worker_id in links:
            await hub.disconnect(worker_id, CloseReason.NORMAL)
            links.pop(worker_id)
        check(hub, rng)
    for handle in handles:
        await handle.aclose()
    check(hub, rng)

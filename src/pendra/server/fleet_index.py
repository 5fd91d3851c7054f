"""Who serves what, and who is least loaded: the hub's index over its connected workers.

The hub keeps it exact (``put`` on attach and on every inventory, ``remove`` on detach and
supersede, ``load_changed`` whenever a worker's ``in_flight`` or ``max_concurrent`` moves); the
router asks it instead of scanning the fleet, so resolving a name and picking a worker cost the
same with 10 workers or 10,000.

Rules:
- ``serving(model_id)``: the workers whose latest inventory has that exact id; ``with_type`` the
  ones whose copy of it has a given ``ModelInfo.types`` entry.
- ``resolve(name)`` is ``pendra.names``' rule over every served id: the exact id when served, else
  the alphabetically first served id with the same ``name_key``; ``stranded(name)`` the same over
  the models workers lost with their backend (first such worker wins).
- ``least_loaded``: among the workers serving the model (with the type, outside ``exclude``) that
  have a free slot, the lowest ``load_key`` (in_flight / max_concurrent, then fewer in flight),
  ties broken uniformly at random. Workers with a free slot sit in buckets by ``load_key``, walked
  from the lowest; inside a bucket a few random draws usually find a candidate at once, and when
  they do not, the bucket is scanned (at most the smaller of the bucket and the candidates).
- A view that is not (or no longer) the indexed one for its id is ignored: a superseded link's
  requests may still end after the new link took its place.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

from pendra.names import match, name_key

if TYPE_CHECKING:
    from pendra.server.hub import WorkerView

# Random draws inside one load bucket before scanning it: with most candidates in the bucket the
# first draw hits; when few are, a scan of the smaller side is cheap anyway.
DRAWS = 4

LoadKey = tuple[float, int]


def load_key(view: WorkerView) -> LoadKey:
    """The order ``least_loaded`` picks in (lowest first); only for workers with a free slot."""
    return (view.in_flight / view.max_concurrent, view.in_flight)


class Members:
    """A set of worker ids that can also give a uniformly random member in O(1)."""

    __slots__ = ("_items", "_pos")

    def __init__(self) -> None:
        self._items: list[str] = []
        self._pos: dict[str, int] = {}

    def add(self, item: str) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: str) -> None:
        index = self._pos.pop(item, None)
        if index is None:
            return
        last = self._items.pop()
        if index < len(self._items):
            self._items[index] = last
            self._pos[last] = index

    def draw(self) -> str:
        return self._items[int(random.random() * len(self._items))]

    def __contains__(self, item: object) -> bool:
        return item in self._pos

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)


class _Entry:
    """What one worker is indexed under, so that removing it is exact."""

    __slots__ = ("view", "pools", "keys", "stranded_keys", "level")

    def __init__(self, view: WorkerView) -> None:
        self.view = view
        self.pools: list[tuple[str, str | None]] = []
        self.keys: list[str] = []
        self.stranded_keys: list[str] = []
        self.level: LoadKey | None = None


class FleetIndex:
    """Model id → workers, name key → model ids, and the free workers by load."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        # (model id, None) → every worker serving it; (model id, type) → those whose copy has it.
        self._pools: dict[tuple[str, str | None], Members] = {}
        self._by_key: dict[str, set[str]] = {}  # name_key → served model ids
        self._stranded: dict[str, dict[str, None]] = {}  # name_key → workers (ordered) with one
        self._levels: dict[LoadKey, Members] = {}  # load key → free workers at it
        self._level_keys: list[LoadKey] = []  # sorted

    # --- maintenance (the hub) --------------------------------------------------------------------

    def put(self, view: WorkerView) -> None:
        """Index ``view`` as it is now (attach, new inventory), replacing any entry of its id."""
        self.remove(view.id)
        entry = _Entry(view)
        self._entries[view.id] = entry
        view._index = self  # its in_flight/max_concurrent setters call load_changed from now on
        for model_id, info in view.models.items():
            for wanted in (None, *info.types):
                pool = self._pools.get((model_id, wanted))
                if pool is None:
                    pool = self._pools[(model_id, wanted)] = Members()
                pool.add(view.id)
                entry.pools.append((model_id, wanted))
            key = name_key(model_id)
            self._by_key.setdefault(key, set()).add(model_id)
            entry.keys.append(key)
        for model_id in view.stranded:
            key = name_key(model_id)
            if key not in entry.stranded_keys:
                self._stranded.setdefault(key, {})[view.id] = None
                entry.stranded_keys.append(key)
        self._place(entry)

    def remove(self, worker_id: str) -> None:
        """Forget the worker (detach, supersede); a no-op when it is not indexed."""
        entry = self._entries.pop(worker_id, None)
        if entry is None:
            return
        entry.view._index = None
        for pool_key in entry.pools:
            pool = self._pools[pool_key]
            pool.discard(worker_id)
            if not pool:
                del self._pools[pool_key]
                if pool_key[1] is None:  # the last worker serving this id
                    ids = self._by_key[name_key(pool_key[0])]
                    ids.discard(pool_key[0])
                    if not ids:
                        del self._by_key[name_key(pool_key[0])]
        for key in entry.stranded_keys:
            holders = self._stranded[key]
            holders.pop(worker_id, None)
            if not holders:
                del self._stranded[key]
        self._unplace(entry)

    def load_changed(self, view: WorkerView) -> None:
        """``view``'s in_flight or max_concurrent moved: file it under its new load."""
        entry = self._entries.get(view.id)
        if entry is None or entry.view is not view:
            return
        self._unplace(entry)
        self._place(entry)

    def _place(self, entry: _Entry) -> None:
        view = entry.view
        if view.max_concurrent - view.in_flight <= 0:
            return  # full: never picked, so not in any bucket
        level = load_key(view)
        bucket = self._levels.get(level)
        if bucket is None:
            bucket = self._levels[level] = Members()
            bisect.insort(self._level_keys, level)
        bucket.add(view.id)
        entry.level = level

    def _unplace(self, entry: _Entry) -> None:
        if entry.level is None:
            return
        bucket = self._levels[entry.level]
        bucket.discard(entry.view.id)
        if not bucket:
            del self._levels[entry.level]
            del self._level_keys[bisect.bisect_left(self._level_keys, entry.level)]
        entry.level = None

    # --- queries (the router) ---------------------------------------------------------------------

    def indexed(self, view: WorkerView) -> bool:
        entry = self._entries.get(view.id)
        return entry is not None and entry.view is view

    def serves(self, model_id: str) -> bool:
        return (model_id, None) in self._pools

    def serving(self, model_id: str, wanted: str | None = None) -> list[WorkerView]:
        """Workers serving ``model_id`` (whose copy has type ``wanted``, when given)."""
        pool = self._pools.get((model_id, wanted))
        return [self._entries[w].view for w in pool] if pool else []

    def has_candidate(self, model_id: str, wanted: str | None,
                      exclude: Collection[str] = ()) -> bool:
        """Whether any worker outside ``exclude`` serves it (free or not)."""
        pool = self._pools.get((model_id, wanted))
        if not pool:
            return False
        return len(pool) > len(exclude) or any(w not in exclude for w in pool)

    def resolve(self, name: str) -> str | None:
        """The served id ``name`` means (see the module rules), or None."""
        if (name, None) in self._pools:
            return name
        ids = self._by_key.get(name_key(name))
        return min(ids) if ids else None

    def stranded(self, name: str) -> tuple[WorkerView, str] | None:
        """A worker holding ``name`` stranded, with the id it has it under; or None."""
        for worker_id in self._stranded.get(name_key(name), ()):
            view = self._entries[worker_id].view
            found = match(name, view.stranded)
            if found is not None:
                return view, found
        return None

    def least_loaded(self, model_id: str, wanted: str | None,
                     exclude: Collection[str] = ()) -> WorkerView | None:
        """The free worker to use for ``model_id`` (see the module rules); None when none is."""
        pool = self._pools.get((model_id, wanted))
        if not pool:
            return None
        for level in self._level_keys:
            bucket = self._levels[level]
            small, big = (bucket, pool) if len(bucket) <= len(pool) else (pool, bucket)
            for _ in range(DRAWS):
                worker_id = small.draw()
                if worker_id in big and worker_id not in exclude:
                    return self._entries[worker_id].view
            eligible = [w for w in small if w in big and w not in exclude]
            if eligible:
                return self._entries[random.choice(eligible)].view
        return None

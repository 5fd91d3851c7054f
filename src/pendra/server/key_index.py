"""The API keys a running control plane accepts, held in memory so authentication does no I/O.

Rules:
- ``KeyIndex`` is owned by the app's lifespan (``async with KeyIndex(store) as keys``): it is built
  from the store before the server answers anything, then kept current. A request's key is
  checked by ``authenticate``: the format, one SHA-256, one dict lookup; no store, no await.
- Creating, revoking and changing the limits of keys *in this process* goes through ``create``,
  ``revoke`` and ``set_limits`` (the
  console's forms, the admin API, and so ``pendra keys create/revoke`` on the control-plane host,
  which reach the running server through the admin API): the store is written first (with the
  change's audit row, in the same transaction, when an actor is given), then the index, before
  the caller gets its answer; so a revoked key is refused, a new key accepted, and
  new limits applied, on the very next request.
- A change made *elsewhere* (another control plane sharing a PostgreSQL store, ``pendra keys``
  writing the store directly when no server answered it, a test seeding the store) reaches the
  index through the store: every ``SYNC_INTERVAL_S`` one aggregate query (``keys.key_version``:
  how many keys, how many revoked, the latest creation and revocation) says whether the table
  changed, and only then is it read whole. Such a change is live here within
  ``SYNC_INTERVAL_S`` plus one query (well under a second).
- A key the index does not know is refused without asking the store: a stranger sending random
  keys costs a hash and a dict lookup each, never a query. (A key made elsewhere is the one
  that waits for the next sync.)
- A reload read while this process changed a key is thrown away and read again on the next tick,
  so a revocation made here is never undone by an older reading of the table.
- When the store cannot be read, the index keeps serving what it last knew (changes made through
  this process still apply at once) and says so in the log once, then again when it recovers.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession

from pendra.server.limits import KeyLimits
from pendra.server.roles import OwnerOnly
from pendra.server.store import audit, keys
from pendra.server.store.audit import Actor
from pendra.server.store.db import Store
from pendra.server.store.keys import KeyRow, KeyVersion
from pendra.server.store.retry import brief, transient
from pendra.server.store.tables import ApiKey
from pendra.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# How often the store is asked whether keys changed elsewhere: a key revoked on another control
# plane (or written to the store directly) is refused here within this, plus one query.
SYNC_INTERVAL_S = 0.5
OTHERS_KEYS = "only an owner may revoke other people's API keys"


async def _owner_name(db: AsyncSession, row: ApiKey) -> str:
    return (await keys.owners(db)).get(row.user_id or "", "nobody")


class KeyIndex:
    """Live keys by SHA-256, and the task that keeps them in step with the store."""

    def __init__(self, store: Store, *, sync_interval_s: float = SYNC_INTERVAL_S) -> None:
        self._store = store
        self._sync_interval_s = sync_interval_s
        self._live: dict[str, KeyRow] = {}  # hash → key, revoked keys left out
        self._by_id: dict[str, KeyRow] = {}  # the same keys by id
        self._version: KeyVersion | None = None  # of the table the index was last read from
        self._changes = 0  # changes made through this process, to spot a reload they overtook
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0  # times the table was read whole (start-up included)

    async def __aenter__(self) -> "KeyIndex":
        await self._reload()
        self._task = asyncio.create_task(self._run(), name="key-index-sync")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._task is not None
        await cancel_and_wait(self._task)

    def authenticate(self, raw: str) -> KeyRow | None:
        """The live key ``raw`` is, or None (unknown or revoked). No I/O."""
        if not keys.well_formed(raw):
            return None
        return self._live.get(keys.hash_key(raw))

    def get(self, key_id: str) -> KeyRow | None:
        """The live key with this id, or None. No I/O."""
        return self._by_id.get(key_id)

    def live_ids(self) -> list[str]:
        return list(self._by_id)

    def __len__(self) -> int:
        return len(self._live)

    def _accept(self, row: KeyRow) -> None:
        self._changes += 1
        if row.revoked:
            self._live.pop(row.hash, None)
            self._by_id.pop(row.id, None)
        else:
            self._live[row.hash] = row
            self._by_id[row.id] = row

    def apply(self, rows: list[ApiKey]) -> None:
        """Take key rows changed in the store by someone else in this process (a user disabled or
        removed, their keys revoked) so the change counts on the next request."""
        for row in rows:
            self._accept(keys.key_row(row))

    async def create(self, name: str, limits: KeyLimits | None = None, *,
                     user_id: str | None = None,
                     actor: Actor | None = None) -> tuple[ApiKey, str]:
        """Make a key for ``user_id`` (the first owner when None) in the store, with its audit
        row when ``actor`` is given, and accept it here at once; returns its row and the raw key."""
        async def work(db: AsyncSession) -> tuple[ApiKey, str]:
            row, raw = await keys.create_key(db, name, limits, user_id=user_id)
            if actor is not None:
                detail = f"for {await _owner_name(db, row)}"
                if limits is not None and limits.describe() != "none":
                    detail += f"; limits: {limits.describe()}"
                await audit.record(db, actor, "key.created", f"{row.name} ({row.id})", detail)
            return row, raw

        row, raw = await self._store.change(work)
        self._accept(keys.key_row(row))
        return row, raw

    async def revoke(self, key_id_or_prefix: str, *, actor: Actor | None = None,
                     only_of: str | None = None) -> ApiKey:
        """Revoke a key in the store (see ``keys.revoke_key``) and refuse it here at once. With
        ``only_of`` (a member's user id) a key of anyone else is refused with 403."""
        async def work(db: AsyncSession) -> ApiKey:
            if only_of is not None:
                found = await keys.find_key(db, key_id_or_prefix)
                if found.user_id != only_of:
                    raise OwnerOnly(OTHERS_KEYS)
            already = (await keys.find_key(db, key_id_or_prefix)).revoked
            row = await keys.revoke_key(db, key_id_or_prefix)
            if actor is not None and not already:
                await audit.record(db, actor, "key.revoked", f"{row.name} ({row.id})",
                                   f"of {await _owner_name(db, row)}")
            return row

        row = await self._store.change(work)
        self._accept(keys.key_row(row))
        return row

    async def set_limits(self, key_id_or_prefix: str, limits: KeyLimits, *,
                         replace: bool = False, actor: Actor | None = None) -> ApiKey:
        """Change a key's limits in the store (``keys.set_limits``), with its audit row when
        ``actor`` is given, and apply them here at once."""
        async def work(db: AsyncSession) -> ApiKey:
            row = await keys.set_limits(db, key_id_or_prefix, limits, replace=replace)
            if actor is not None:
                await audit.record(db, actor, "key.limits_changed", f"{row.name} ({row.id})",
                                   keys.limits_of(row).describe())
            return row

        row = await self._store.change(work)
        self._accept(keys.key_row(row))
        return row

    async def sync(self) -> bool:
        """Bring the index in step with the store if the table changed; True if it was read."""
        async with self._store.session() as session:
            version = await keys.key_version(session)
        if version == self._version:
            return False
        return await self._reload()

    async def _reload(self) -> bool:
        changes = self._changes
        async with self._store.session() as session:
            version = await keys.key_version(session)  # first: the rows can only be newer
            rows = await keys.key_rows(session)
        if changes != self._changes:  # a change here overtook this reading: read again later
            return False
        self._live = {row.hash: row for row in rows if not row.revoked}
        self._by_id = {row.id: row for row in self._live.values()}
        self._version = version
        self.reloads += 1
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval_s)
            try:
                await self.sync()
            # The sync task's boundary: whatever a read raises, the index keeps what it knew.
            except Exception as exc:
                if not self._failing:
                    (log.warning if transient(exc) else log.error)(
                        "cannot read API keys from the store; serving the %d known until it "
                        "can be read again: %s", len(self._live), brief(exc))
                self._failing = True
            else:
                if self._failing:
                    log.info("API keys are read from the store again")
                self._failing = False

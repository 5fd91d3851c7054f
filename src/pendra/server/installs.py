"""Model installs and removals on workers: durable operations with live progress.

Rules:
- An install is a row in the store (``installs``) from the moment it is asked for until it ends in
  ``succeeded``, ``failed`` or ``cancelled``; it never stays ``running`` after its worker is gone
  (the op handle raises ``WorkerGone`` and the row fails with that reason), and operations left
  running by a previous control-plane process are failed at start-up.
- An install goes into one backend of the worker: the one asked for, else the first of the
  catalogue's ``PREFERENCE`` order that the entry installs into and the worker has verified with
  the ``install`` capability (Ollama, then LM Studio). A backend that cannot install (vLLM, a
  generic OpenAI-compatible server) is refused with the reason.
- A second install of the same tag into the same backend of the same worker while one runs attaches
  to the running one (same id, same progress) instead of starting another download.
- Progress is fanned out to any number of watchers: each watcher gets the current snapshot first,
  then every change, as the worker reports it (the worker's backend keeps ``completed`` from going
  backwards where it reads the install stream). The row is written at most every
  ``PERSIST_EVERY_S`` while running, and always at the end.
- An install ends in the outcome its worker's frame carries (``OpDone``/``OpFailed.outcome``:
  succeeded, failed or cancelled); a success fills the bar.
- What can be installed into which backend is the catalogue's rule (``catalogue.installable``); a
  model to remove is named the way clients name it (``pendra.names.match`` against the worker's
  models), and removed from the backend that serves it — refused with the reason when that backend
  cannot remove models (LM Studio: only inside its app; vLLM: it serves what it was launched with).
- ``outcomes`` counts the installs this process saw end, by state (read by the metrics).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pendra.catalogue.installable import (PREFERENCE, default_kind, install_source,
                                           installable_into)
from pendra.catalogue.loader import Catalogue, CatalogueEntry, Variant
from pendra.errors import InvalidRequest, NotFound, PendraError
from pendra.names import match
from pendra.protocol.frames import Install, OpDone, OpFailed, OpOutcome, Progress, Uninstall
from pendra.server.hub import Hub, WorkerGone
from pendra.server.store import installs as install_rows
from pendra.server.store.db import Store

log = logging.getLogger(__name__)

# Write running progress to the store at most this often (the final state is always written).
PERSIST_EVERY_S = 2.0
# Why a backend kind installs or removes nothing through Pendra (the console says the same).
NO_INSTALL = {"vllm": "vLLM serves the model it was launched with (--model); restart vLLM to "
                      "serve another"}
NO_UNINSTALL = {**NO_INSTALL,
                "lmstudio": "LM Studio's API has no way to delete a model; remove it inside the "
                            "LM Studio app"}
# How long a removal may take on the worker before the client is told it timed out.
REMOVE_TIMEOUT_S = 60.0
TERMINAL = frozenset(outcome.value for outcome in OpOutcome)
# How messages name a backend kind.
# How messages and the console name backend kinds (a generic endpoint is shown by its own name).
BACKEND_NAMES = {"ollama": "Ollama", "lmstudio": "LM Studio", "vllm": "vLLM",
                 "pendra": "Pendra (built-in)", "speaches": "Speaches"}


@dataclass(frozen=True)
class Snapshot:
    """The state of one install as watchers see it."""

    id: str
    catalogue_id: str
    variant: str
    model_tag: str
    backend: str
    worker_id: str
    worker_name: str
    state: str
    status_text: str
    completed: int
    total: int
    error: str | None
    requested_by: str
    created_at: str
    finished_at: str | None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["percent"] = round(100 * self.completed / self.total, 1) if self.total else None
        return data


class _Live:
    """One running install: its latest snapshot and the condition watchers wait on."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.version = 0
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    async def publish(self, snapshot: Snapshot) -> None:
        async with self.changed:
            self.snapshot = snapshot
            self.version += 1
            self.changed.notify_all()


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def lifecycle_note(status: Any) -> str:
    """What the console says about installing into and removing from a verified backend that
    cannot do both through Pendra (empty when it can)."""
    install, remove = can_do(status, "install"), can_do(status, "uninstall")
    if install and remove:
        return ""
    if status.kind in NO_INSTALL and not install:
        return NO_INSTALL[status.kind] + "; Pendra does not install or remove its models."
    if install:
        return ("Installs from the catalogue; " +
                NO_UNINSTALL.get(status.kind, "models are removed outside Pendra") + ".")
    return "Serves the models it was started with; Pendra does not install or remove them."


def can_do(status: Any, what: str) -> bool:
    """Whether a verified backend does ``what``: it says so in its capabilities (a backend that
    lists none is an Ollama of a worker that predates them, which installs and removes)."""
    return what in status.capabilities or (not status.capabilities and status.kind == "ollama")


class Installs:
    """The install service of one control plane (owned by the app's lifespan)."""

    def __init__(self, store: Store, hub: Hub, catalogue: Catalogue) -> None:
        self._store = store
        self._hub = hub
        self._catalogue = catalogue
        self._live: dict[str, _Live] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._lock = asyncio.Lock()
        self.outcomes: Counter[str] = Counter()  # installs ended here, by state

    async def __aenter__(self) -> "Installs":
        async with self._store.session() as session:
            count = await install_rows.fail_interrupted(
                session, "the control plane restarted while this install was running")
            await session.commit()
        if count:
            log.warning("marked %d interrupted install(s) as failed", count)
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for live in list(self._live.values()):
            if live.task is not None:
                live.task.cancel()
        assert self._tasks is not None
        await self._tasks.__aexit__(None, None, None)

    # --- resolving what to install -------------------------------------------------------------------

    def resolve(self, model: str, variant: str | None,
                backend: str | None = None) -> tuple[CatalogueEntry, Variant, str]:
        """Catalogue id (+ variant), ``id:variant``, or any variant's Ollama tag or Speaches id →
        entry, variant and what ``backend`` (default: the entry's default kind) installs it from
        (the Ollama tag, the Speaches model id, LM Studio's download id)."""
        entry, found = self._catalogue.resolve(model, variant)
        if entry is None or found is None:
            raise NotFound(f"'{model}' is not in the catalogue; GET /api/v1/catalogue lists what "
                           "can be installed")
        return entry, found, install_source(entry, found, backend or default_kind(entry))

    def _view(self, worker: str) -> Any:
        for view in self._hub.connected():
            if worker in (view.id, view.name):
                return view
        raise NotFound(f"worker '{worker}' is not connected")

    def _worker(self, worker: str, backend: str = "ollama") -> tuple[str, str]:
        view = self._view(worker)
        status = next((b for b in view.backends if b.kind == backend), None)
        if status is None or not status.verified:
            raise InvalidRequest(f"worker '{view.name}' has no verified "
                                 f"{BACKEND_NAMES.get(backend, backend)} backend")
        if not can_do(status, "install"):
            raise InvalidRequest(f"the {backend} backend of worker '{view.name}' cannot install "
                                 f"models{': ' + NO_INSTALL[backend] if backend in NO_INSTALL else ''}")
        return view.id, view.name

    def choose_backend(self, model: str, variant: str | None, worker: str) -> str:
        """The backend an install that names none goes into (see the rules)."""
        entry, found = self._catalogue.resolve(model, variant)
        view = self._view(worker)
        can = {b.kind for b in view.backends if b.verified and can_do(b, "install")}
        for kind in PREFERENCE:
            if kind in can and (entry is None or installable_into(entry, kind)):
                return kind
        # resolve/_worker then say what is missing
        return default_kind(entry) if entry is not None else "ollama"

    # --- starting, watching, cancelling -----------------------------------------------------------------

    async def start(self, model: str, variant: str | None, worker: str,
                    requested_by: str, backend: str | None = None) -> Snapshot:
        backend = backend or self.choose_backend(model, variant, worker)
        worker_id, worker_name = self._worker(worker, backend)
        entry, chosen, tag = self.resolve(model, variant, backend)
        async with self._lock:
            for live in self._live.values():
                snap = live.snapshot
                if snap.worker_id == worker_id and snap.model_tag == tag and \
                        snap.backend == backend and not snap.done:
                    return snap  # attach to the install already running
            op_id = "op_" + secrets.token_hex(8)
            async with self._store.session() as session:
                row = await install_rows.create_install(
                    session, op_id=op_id, catalogue_id=entry.id, variant=chosen.id, model_tag=tag,
                    backend=backend, worker_id=worker_id, requested_by=requested_by)
                await session.commit()
            snapshot = Snapshot(
                id=op_id, catalogue_id=entry.id, variant=chosen.id, model_tag=tag,
                backend=backend, worker_id=worker_id, worker_name=worker_name, state="queued",
                status_text="queued", completed=0, total=0, error=None,
                requested_by=requested_by, created_at=_iso(row.created_at) or "",
                finished_at=None)
            live = _Live(snapshot)
            self._live[op_id] = live
            assert self._tasks is not None
            live.task = self._tasks.create_task(self._drive(live), name=f"install:{op_id}")
        return snapshot

    async def get(self, op_id: str) -> Snapshot:
        live = self._live.get(op_id)
        if live is not None:
            return live.snapshot
        async with self._store.session() as session:
            row = await install_rows.get_install(session, op_id)
        if row is None:
            raise NotFound(f"install '{op_id}' not found")
        return self._from_row(row)

    async def list(self, *, worker: str | None = None) -> list[Snapshot]:
        async with self._store.session() as session:
            rows = await install_rows.list_installs(session, worker_id=worker)
        return [self._live[r.id].snapshot if r.id in self._live else self._from_row(r)
                for r in rows]

    async def watch(self, op_id: str) -> AsyncIterator[Snapshot]:
        """The current snapshot, then each change, until the install ends."""
        live = self._live.get(op_id)
        if live is None:
            yield await self.get(op_id)
            return
        seen = -1
        while True:
            async with live.changed:
                await live.changed.wait_for(lambda: live.version != seen)
                seen = live.version
                snapshot = live.snapshot
            yield snapshot
            if snapshot.done:
                return

    async def cancel(self, op_id: str) -> Snapshot:
        live = self._live.get(op_id)
        if live is None:
            snapshot = await self.get(op_id)  # NotFound, or already finished
            return snapshot
        if not live.snapshot.done:
            try:
                await self._hub.cancel_op(live.snapshot.worker_id, op_id)
            except WorkerGone:
                pass  # the driver sees the disconnect and fails the op
        return live.snapshot

    # --- the driver ---------------------------------------------------------------------------------------

    async def _drive(self, live: _Live) -> None:
        snap = live.snapshot
        frame = Install(op_id=snap.id, model=snap.model_tag, backend=snap.backend)
        last_persist = 0.0
        try:
            await self._update(live, state="running", status_text="starting")
            handle = await self._hub.start_op(snap.worker_id, frame)
            async for event in handle:
                if isinstance(event, Progress):
                    now = time.monotonic()
                    persist = now - last_persist >= PERSIST_EVERY_S
                    if persist:
                        last_persist = now
                    await self._update(live, persist=persist, status_text=event.status,
                                       completed=event.completed, total=event.total)
                elif isinstance(event, OpDone | OpFailed):
                    await self._end(live, event)
                    return
            await self._update(live, state="failed", status_text="failed",
                               error="the worker ended the install without a result")
        except WorkerGone as exc:
            await self._update(live, state="failed", status_text="failed",
                               error=f"worker '{exc.worker_name or exc.worker_id}' disconnected "
                                     "during the install")
        except PendraError as exc:
            await self._update(live, state="failed", status_text="failed", error=exc.message)
        except asyncio.CancelledError:
            # Control plane shutting down: record it, then let the cancellation propagate.
            await asyncio.shield(self._update(
                live, state="failed", status_text="failed",
                error="the control plane stopped during the install"))
            raise
        finally:
            self._live.pop(snap.id, None)

    async def _end(self, live: _Live, event: OpDone | OpFailed) -> None:
        outcome = event.outcome
        if outcome is OpOutcome.SUCCEEDED:
            current = live.snapshot
            await self._update(live, state=outcome.value, status_text="success",
                               completed=max(current.completed, current.total),
                               total=current.total)
        elif outcome is OpOutcome.CANCELLED:
            await self._update(live, state=outcome.value, status_text="cancelled")
        else:
            await self._update(live, state=outcome.value, status_text="failed",
                               error=event.message if isinstance(event, OpFailed) else None)

    async def _update(self, live: _Live, *, persist: bool = True, **changes: Any) -> None:
        # One clock reading for what watchers see and what is stored: the record read back later
        # (after a restart, say) must say what the live snapshot said.
        finished_at = datetime.now(UTC)
        if changes.get("state") in TERMINAL:
            changes["finished_at"] = _iso(finished_at)
        if changes.get("state") in TERMINAL and not live.snapshot.done:
            self.outcomes[changes["state"]] += 1
        snapshot = replace(live.snapshot, **changes)
        await live.publish(snapshot)
        if persist or snapshot.done:
            fields = {k: v for k, v in changes.items() if k != "finished_at"}
            if snapshot.done:
                fields["finished_at"] = finished_at
            async with self._store.session() as session:
                await install_rows.update_install(session, snapshot.id, **fields)
                await session.commit()

    def _from_row(self, row: Any) -> Snapshot:
        view = self._hub.get(row.worker_id)
        return Snapshot(
            id=row.id, catalogue_id=row.catalogue_id, variant=row.variant,
            model_tag=row.model_tag, backend=row.backend, worker_id=row.worker_id,
            worker_name=view.name if view else row.worker_id, state=row.state,
            status_text=row.status_text or row.state, completed=row.completed or 0,
            total=row.total or 0, error=row.error, requested_by=row.requested_by or "",
            created_at=_iso(row.created_at) or "", finished_at=_iso(row.finished_at))

    # --- removal --------------------------------------------------------------------------------------------

    async def remove(self, worker: str, model: str) -> None:
        """Remove an installed model from the worker's backend that serves it (Ollama's
        ``DELETE /api/delete``, Speaches' ``DELETE /v1/models/{id}``; Ollama when the worker does
        not list the model, or Speaches when only Speaches is verified)."""
        view = self._view(worker)
        model = match(model, view.models) or model
        info = view.models.get(model)
        if info is not None:
            backend = info.backend
        elif not view.has_verified("ollama") and view.has_verified("speaches"):
            backend = "speaches"  # a model it does not list: its backend says 404
        else:
            backend = "ollama"
        status = next((b for b in view.backends if b.kind == backend), None)
        if status is not None and status.verified and not can_do(status, "uninstall"):
            raise InvalidRequest(f"'{model}' is served by the {backend} backend of worker "
                                 f"'{view.name}', which cannot remove models through Pendra: "
                                 f"{NO_UNINSTALL.get(backend, 'it has no removal API')}")
        if status is None or not status.verified:
            raise InvalidRequest(f"worker '{view.name}' has no verified "
                                 f"{BACKEND_NAMES.get(backend, backend)} backend")
        worker_id, worker_name = view.id, view.name
        op_id = "op_" + secrets.token_hex(8)
        handle = await self._hub.start_op(worker_id, Uninstall(op_id=op_id, model=model,
                                                               backend=backend))
        async with asyncio.timeout(REMOVE_TIMEOUT_S):
            async for event in handle:
                if isinstance(event, OpDone):
                    return
                if isinstance(event, OpFailed):
                    if event.status == 404:
                        raise NotFound(f"model '{model}' is not installed on worker "
                                       f"'{worker_name}'")
                    raise PendraError(f"removing '{model}' from '{worker_name}' failed: "
                                      f"{event.message}", status=502)
        raise PendraError(f"worker '{worker_name}' ended the removal without a result", status=502)

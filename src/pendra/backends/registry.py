"""The worker's view of its host: which backends are verified and which models they serve.

On every refresh tick, each backend kind tries its explicit endpoint if one is configured, else its
probe list in order, and activates the first endpoint that verifies. A backend that stops answering
is deactivated (its models leave the inventory); one that comes back is found on the next tick. The
reason an endpoint was rejected is logged once, not every tick. The MODELS setting filters what is
offered. New kinds (vLLM, LM Studio) join by adding an entry to ``KINDS``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pendra.backends.base import Backend, BackendStatus, ModelInfo
from pendra.backends.ollama.backend import OllamaBackend
from pendra.config import WorkerSettings
from pendra.errors import BackendError, ModelNotFound

log = logging.getLogger(__name__)

OLLAMA_PROBES = ("http://localhost:11434", "http://host.docker.internal:11434")


@dataclass
class _Slot:
    backend: Backend
    endpoints: tuple[str, ...]
    status: BackendStatus
    models: list[ModelInfo] = field(default_factory=list)
    logged: set[tuple[str, str]] = field(default_factory=set)


class BackendRegistry:
    def __init__(self, settings: WorkerSettings, *, probe_urls: Sequence[str] | None = None) -> None:
        self.settings = settings
        endpoints = ((settings.ollama_endpoint,) if settings.ollama_endpoint
                     else tuple(probe_urls or OLLAMA_PROBES))
        ollama = OllamaBackend(num_ctx_cap=settings.ollama_num_ctx_cap)
        self._slots: dict[str, _Slot] = {
            "ollama": _Slot(ollama, endpoints,
                            BackendStatus("ollama", endpoints[0], False, reason="not probed yet",
                                          tried=endpoints)),
        }
        self._lock = asyncio.Lock()

    # --- views ------------------------------------------------------------------------------------------

    def statuses(self) -> list[BackendStatus]:
        return [slot.status for slot in self._slots.values()]

    def models(self) -> list[ModelInfo]:
        wanted = set(self.settings.models) if self.settings.models is not None else None
        found: list[ModelInfo] = []
        for slot in self._slots.values():
            if not slot.status.verified:
                continue
            for model in slot.models:
                if wanted is None or model.id in wanted or model.id.removesuffix(":latest") in wanted:
                    found.append(model)
        return found

    def backend_for(self, model_id: str) -> tuple[Backend, ModelInfo]:
        candidates = (model_id, f"{model_id}:latest")
        for model in self.models():
            if model.id in candidates:
                return self._slots[model.backend].backend, model
        raise ModelNotFound(f"model '{model_id}' is not served by worker "
                            f"'{self.settings.worker_name}'")

    def backend_of_kind(self, kind: str) -> Backend:
        slot = self._slots.get(kind)
        if slot is None or not slot.status.verified:
            raise BackendError(f"no verified {kind} backend on worker '{self.settings.worker_name}'",
                               status=503)
        return slot.backend

    def _fingerprint(self) -> tuple[object, ...]:
        return (tuple((s.kind, s.endpoint, s.verified, s.version) for s in self.statuses()),
                tuple((m.id, m.digest, m.context_length) for m in self.models()))

    # --- discovery ---------------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """One discovery pass over every backend; True when the inventory changed."""
        async with self._lock:
            before = self._fingerprint()
            for slot in self._slots.values():
                await self._refresh_slot(slot)
            return self._fingerprint() != before

    async def _refresh_slot(self, slot: _Slot) -> None:
        reasons: list[str] = []
        for endpoint in slot.endpoints:
            status = await slot.backend.verify(endpoint)
            if not status.verified:
                reasons.append(f"{endpoint}: {status.reason}")
                self._log_once(slot, endpoint, status.reason)
                continue
            try:
                slot.models = await slot.backend.list_models()
            except BackendError as exc:
                reasons.append(f"{endpoint}: {exc.message}")
                self._log_once(slot, endpoint, exc.message)
                continue
            if not slot.status.verified:
                log.info("%s %s found at %s with %d model(s)", slot.backend.kind, status.version,
                         endpoint, len(slot.models))
            slot.logged = {key for key in slot.logged if key[0] != endpoint}
            slot.status = BackendStatus(status.kind, endpoint, True, status.version,
                                        tried=slot.endpoints, capabilities=status.capabilities)
            return
        if slot.status.verified:
            log.warning("%s at %s stopped answering; its models are withdrawn", slot.backend.kind,
                        slot.status.endpoint)
        slot.models = []
        slot.status = BackendStatus(slot.backend.kind, slot.endpoints[-1], False,
                                    reason="; ".join(reasons), tried=slot.endpoints)

    def _log_once(self, slot: _Slot, endpoint: str, reason: str) -> None:
        key = (endpoint, reason)
        if key not in slot.logged:
            slot.logged.add(key)
            log.info("%s not available at %s: %s", slot.backend.kind, endpoint, reason)

    async def run(self, stop: asyncio.Event, on_change: Callable[[], Awaitable[None]]) -> None:
        """Refresh every tick until ``stop`` is set, calling ``on_change`` after each change."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.settings.refresh_interval_s)
            except TimeoutError:
                pass
            if stop.is_set():
                return
            if await self.refresh():
                await on_change()

    async def aclose(self) -> None:
        for slot in self._slots.values():
            await slot.backend.aclose()

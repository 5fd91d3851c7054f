"""The worker's view of its host: which backends are verified and which models they serve.

Rules:
- The backends a worker looks for are ``backend_specs``, in this order: Ollama, LM Studio, vLLM,
  Speaches, then each endpoint of ``OPENAI_ENDPOINTS`` (the generic OpenAI-compatible backend,
  never probed). A new kind joins by adding one ``BackendSpec``: its kind, its probe list,
  the setting naming its explicit endpoint, and how to build it.
- On every refresh tick, each backend kind tries its explicit endpoint if one is configured, else
  its probe list in order, and activates the first endpoint that verifies. Two kinds may probe the
  same port (vLLM and Speaches both default to 8000): each verifies with its own API, so the one
  that answers is taken by the right kind and rejected by the other with a reason. The reason an
  endpoint was rejected is logged once, not every tick. The MODELS setting filters what is offered
  (its names compared by ``pendra.names.name_key``, so ``llama3.2`` keeps ``llama3.2:latest``).
- A kind named in ``BACKENDS_DISABLED`` is never probed nor used; ``statuses`` still lists it,
  with the reason, so ``pendra backends`` and the console show every kind.
- One id, several backends: when a backend lists a model whose name (``name_key``) an earlier
  backend in the order above already offers, the worker offers it as ``<id>@<kind>``
  (``qwen3:8b@lmstudio``); the earlier backend keeps the plain id. So every copy is listed once per
  backend, each reachable by its own id, and the plain id always means the same backend. The
  backend is sent its own id (``backend_for`` returns the backend's ``ModelInfo``).
- A request names the exact id the worker offers (the control plane resolved it: see
  ``pendra.names``); ``backend_for`` does no name matching of its own.
- A verified backend goes **down** when a tick's verification fails, or when ``recheck`` (called
  after a request could not reach it or its stream stalled) finds it no longer answering. Going
  down withdraws its models from the inventory — their ids are remembered, so a request for one is
  told "unavailable, retry after …" rather than "not served" — and calls every ``subscribe``r at
  once, so the requests in flight on it fail instead of hanging.
- A backend that went down is re-probed on its own schedule (``reprobe_delay_s``: after about a
  second, backing off to the refresh interval), so after a restart it serves again within about a
  second. ``retry_after_s`` is the honest wait to tell clients: until the next probe.
- ``run`` is the one loop that probes on schedule (ticks and re-probes) and announces: whenever the
  inventory differs from the one last announced, it awaits ``on_change``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pendra.backends.base import Backend, BackendStatus, ModelInfo
from pendra.backends.ollama.backend import OllamaBackend
from pendra.backends.lmstudio import PROBES as LMSTUDIO_PROBES
from pendra.backends.lmstudio import LMStudioBackend
from pendra.backends.ollama.client import StreamLimits
from pendra.backends.generic import GenericBackend
from pendra.backends.speaches import SpeachesBackend
from pendra.backends.vllm import PROBES as VLLM_PROBES
from pendra.backends.vllm import VLLMBackend
from pendra.config import WorkerSettings
from pendra.errors import BackendError, BackendUnavailable, ModelNotFound
from pendra.names import name_key

log = logging.getLogger(__name__)

OLLAMA_PROBES = ("http://localhost:11434", "http://host.docker.internal:11434")
# Speaches' default port is uvicorn's 8000, which vLLM also uses: verification tells them apart.
SPEACHES_PROBES = ("http://localhost:8000", "http://host.docker.internal:8000")
# A backend that went down is probed again after REPROBE_FIRST_S, then each wait is REPROBE_GROWTH
# times the one before, up to the refresh interval: a restart (seconds) is noticed within about a
# second, a long outage costs at most one probe per tick. One prober per backend: no herd, no jitter.
REPROBE_FIRST_S = 1.0
REPROBE_GROWTH = 1.2


@dataclass(frozen=True)
class BackendSpec:
    """One kind of backend the worker looks for."""

    kind: str
    probes: tuple[str, ...]  # tried in order when ``endpoint`` is empty; () = only when configured
    endpoint: str  # the explicit endpoint configured, or ""
    setting: str  # the setting that names the endpoint (for messages)
    make: Callable[[], Backend]


def backend_specs(settings: WorkerSettings) -> list[BackendSpec]:
    """Every backend kind, in the order that decides which one keeps a shared model id."""
    limits = StreamLimits(first_line_s=settings.first_token_timeout_s,
                          stall_s=settings.stream_stall_timeout_s)
    specs = [
        BackendSpec("ollama", OLLAMA_PROBES, settings.ollama_endpoint, "OLLAMA_ENDPOINT",
                    lambda: OllamaBackend(num_ctx_cap=settings.ollama_num_ctx_cap, limits=limits)),
        BackendSpec("lmstudio", LMSTUDIO_PROBES, settings.lmstudio_endpoint, "LMSTUDIO_ENDPOINT",
                    lambda: LMStudioBackend(api_key=settings.lmstudio_api_token, limits=limits)),
        BackendSpec("vllm", VLLM_PROBES, settings.vllm_endpoint, "VLLM_ENDPOINT",
                    lambda: VLLMBackend(api_key=settings.vllm_api_key, limits=limits)),
        BackendSpec("speaches", SPEACHES_PROBES, settings.speaches_endpoint, "SPEACHES_ENDPOINT",
                    lambda: SpeachesBackend(
                        transcription_timeout_s=settings.first_token_timeout_s)),
    ]
    for entry in settings.openai_endpoints:
        specs.append(BackendSpec(
            entry["name"], (), entry["url"], "OPENAI_ENDPOINTS",
            lambda entry=entry: GenericBackend(kind=entry["name"], api_key=entry["api_key"],
                                               limits=limits)))
    return specs


def reprobe_delay_s(failed_probes: int, cap_s: float) -> float:
    """Seconds until the next probe of a backend that is down, after ``failed_probes`` failures."""
    return min(cap_s, REPROBE_FIRST_S * REPROBE_GROWTH ** min(max(failed_probes, 0), 100))


@dataclass
class _Slot:
    backend: Backend
    endpoints: tuple[str, ...]
    status: BackendStatus
    disabled: bool = False
    models: list[ModelInfo] = field(default_factory=list)  # kept while down: "unavailable", not 404
    logged: set[tuple[str, str]] = field(default_factory=set)
    down_since: float | None = None  # monotonic time it went down; None while up or never found
    failed_probes: int = 0  # re-probes that failed since it went down
    next_probe_at: float | None = None  # when to re-probe it; None unless it is down


def qualified(model_id: str, kind: str) -> str:
    """The id a model gets when an earlier backend offers its name already."""
    return f"{model_id}@{kind}"


class BackendRegistry:
    def __init__(self, settings: WorkerSettings, *, probe_urls: Sequence[str] | None = None,
                 probes: Mapping[str, Sequence[str]] | None = None,
                 specs: Sequence[BackendSpec] | None = None) -> None:
        """``probe_urls`` replaces Ollama's probe list and ``probes`` any kind's (tests point them
        at emulators); an explicit endpoint setting still wins over both."""
        self.settings = settings
        overrides = dict(probes or {})
        if probe_urls is not None:
            overrides["ollama"] = tuple(probe_urls)
        disabled = set(settings.backends_disabled)
        self._slots: dict[str, _Slot] = {}
        for spec in (specs if specs is not None else backend_specs(settings)):
            endpoints = ((spec.endpoint,) if spec.endpoint
                         else tuple(overrides.get(spec.kind, spec.probes)))
            if not endpoints:
                status = BackendStatus(spec.kind, "", False,
                                       reason=f"no endpoint configured ({spec.setting})")
            elif spec.kind in disabled:
                status = BackendStatus(spec.kind, endpoints[0] if endpoints else "", False,
                                       reason="disabled by BACKENDS_DISABLED")
            else:
                status = BackendStatus(spec.kind, endpoints[0], False, reason="not probed yet",
                                       tried=endpoints)
            self._slots[spec.kind] = _Slot(spec.make(), endpoints, status,
                                           disabled=spec.kind in disabled or not endpoints)
        unknown = sorted(disabled - set(self._slots))
        if unknown:
            log.warning("BACKENDS_DISABLED names %s, which %s no backend here (known: %s)",
                        ", ".join(unknown), "is" if len(unknown) == 1 else "are",
                        ", ".join(self._slots))
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[str, str], None]] = []
        self._wake = asyncio.Event()  # set when a probe was scheduled outside ``run``

    # --- views ------------------------------------------------------------------------------------------

    def statuses(self) -> list[BackendStatus]:
        return [slot.status for slot in self._slots.values()]

    def _offered(self, slot: _Slot) -> list[ModelInfo]:
        if self.settings.models is None:
            return list(slot.models)
        wanted = {name_key(name) for name in self.settings.models}
        return [model for model in slot.models if name_key(model.id) in wanted]

    def _offers(self) -> list[tuple[ModelInfo, ModelInfo]]:
        """(what the worker offers, what the backend serves) for every model of every verified
        backend: a name an earlier backend offers already becomes ``<id>@<kind>`` (see rules)."""
        taken: set[str] = set()
        offers: list[tuple[ModelInfo, ModelInfo]] = []
        for kind, slot in self._slots.items():
            if not slot.status.verified:
                continue
            for model in self._offered(slot):
                offered = model
                if name_key(model.id) in taken:
                    try:
                        offered = replace(model, id=qualified(model.id, kind))
                    except ValueError:  # pydantic's ValidationError: the id grew past its bound
                        continue
                    if name_key(offered.id) in taken:
                        continue  # the same id listed twice by one backend
                taken.add(name_key(offered.id))
                offers.append((offered, model))
        return offers

    def models(self) -> list[ModelInfo]:
        return [offered for offered, _ in self._offers()]

    def native_name(self, kind: str, model: str) -> str:
        """The backend's own name for an id the worker offers (``x@kind`` → ``x``)."""
        suffix = f"@{kind}"
        return model[:-len(suffix)] if model.endswith(suffix) else model

    def backend_for(self, model_id: str) -> tuple[Backend, ModelInfo]:
        """The backend serving ``model_id`` and its own ``ModelInfo`` (its own id):
        ``BackendUnavailable`` (with the wait until its next probe) when it is one a down backend
        served, ``ModelNotFound`` when nothing serves it."""
        for offered, native in self._offers():
            if offered.id == model_id:
                return self._slots[native.backend].backend, native
        for kind, slot in self._slots.items():
            if slot.down_since is not None and any(
                    model_id in (m.id, qualified(m.id, kind)) for m in self._offered(slot)):
                raise BackendUnavailable(
                    f"the {kind} backend at {slot.status.endpoint} that serves '{model_id}' on "
                    f"worker '{self.settings.worker_name}' is not answering",
                    retry_after_s=self.retry_after_s(kind))
        raise ModelNotFound(f"model '{model_id}' is not served by worker "
                            f"'{self.settings.worker_name}'")

    def backend_of_kind(self, kind: str) -> Backend:
        slot = self._slots.get(kind)
        if slot is not None and slot.disabled:
            raise BackendError(f"the {kind} backend is disabled on worker "
                               f"'{self.settings.worker_name}' (BACKENDS_DISABLED)", status=503)
        if slot is None or not slot.status.verified:
            raise BackendError(f"no verified {kind} backend on worker '{self.settings.worker_name}'",
                               status=503)
        return slot.backend

    def retry_after_s(self, kind: str) -> float:
        """Whole seconds (at least 1) until ``kind``'s backend is next probed: the earliest a
        request for it could succeed again."""
        slot = self._slots.get(kind)
        due = slot.next_probe_at if slot is not None else None
        wait = REPROBE_FIRST_S if due is None else due - time.monotonic()
        return float(max(1, math.ceil(wait)))

    def _fingerprint(self) -> tuple[object, ...]:
        return (tuple((s.kind, s.endpoint, s.verified, s.version) for s in self.statuses()),
                tuple((m.id, m.digest, m.context_length) for m in self.models()))

    def subscribe(self, on_down: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``on_down(kind, reason)`` the moment a backend goes down; returns the unsubscribe."""
        self._listeners.append(on_down)
        return lambda: self._listeners.remove(on_down)

    # --- discovery ---------------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """One discovery pass over every backend; True when the inventory changed."""
        async with self._lock:
            before = self._fingerprint()
            for slot in self._slots.values():
                if not slot.disabled:
                    await self._refresh_slot(slot)
            return self._fingerprint() != before

    async def reprobe_due(self) -> bool:
        """Re-probe every down backend whose probe is due; True when the inventory changed."""
        async with self._lock:
            before = self._fingerprint()
            now = time.monotonic()
            for slot in self._slots.values():
                if slot.next_probe_at is not None and slot.next_probe_at <= now:
                    await self._refresh_slot(slot)
            return self._fingerprint() != before

    async def recheck(self, kind: str) -> float | None:
        """Verify ``kind``'s backend now, after a request could not reach it or its stream stalled.

        None when it still answers (the failure was the request's own); otherwise it is marked
        down at once (see the rules) and the result is ``retry_after_s``.
        """
        slot = self._slots.get(kind)
        if slot is None or slot.disabled:
            return None
        async with self._lock:
            if slot.status.verified:
                status = await slot.backend.verify(slot.status.endpoint)
                if status.verified:
                    return None
                slot.status = BackendStatus(kind, slot.status.endpoint, False,
                                            reason=f"{slot.status.endpoint}: {status.reason}",
                                            tried=slot.endpoints)
                self._went_down(slot, status.reason)
            return self.retry_after_s(kind)

    async def _refresh_slot(self, slot: _Slot) -> None:
        reasons: list[str] = []
        for endpoint in slot.endpoints:
            status = await slot.backend.verify(endpoint)
            if not status.verified:
                reasons.append(f"{endpoint}: {status.reason}")
                self._log_once(slot, endpoint, status.reason)
                continue
            try:
                models = await slot.backend.list_models()
            except BackendError as exc:
                reasons.append(f"{endpoint}: {exc.message}")
                self._log_once(slot, endpoint, exc.message)
                continue
            slot.models = models
            if slot.down_since is not None:
                log.info("%s %s is back at %s after %.1fs down, with %d model(s)",
                         slot.backend.kind, status.version, endpoint,
                         time.monotonic() - slot.down_since, len(models))
            elif not slot.status.verified:
                log.info("%s %s found at %s with %d model(s)", slot.backend.kind, status.version,
                         endpoint, len(models))
            slot.logged = {key for key in slot.logged if key[0] != endpoint}
            slot.status = BackendStatus(status.kind, endpoint, True, status.version,
                                        tried=slot.endpoints, capabilities=status.capabilities)
            slot.down_since = slot.next_probe_at = None
            slot.failed_probes = 0
            return
        was_verified = slot.status.verified
        slot.status = BackendStatus(slot.backend.kind, slot.endpoints[-1], False,
                                    reason="; ".join(reasons), tried=slot.endpoints)
        if was_verified:
            self._went_down(slot, "; ".join(reasons))
        elif slot.down_since is not None:
            slot.failed_probes += 1
            slot.next_probe_at = time.monotonic() + reprobe_delay_s(
                slot.failed_probes, self.settings.refresh_interval_s)

    def _went_down(self, slot: _Slot, reason: str) -> None:
        """Withdraw a backend that stopped answering, schedule its first re-probe, tell listeners."""
        kind = slot.backend.kind
        slot.down_since = time.monotonic()
        slot.failed_probes = 0
        slot.next_probe_at = slot.down_since + reprobe_delay_s(0, self.settings.refresh_interval_s)
        log.warning("%s stopped answering (%s); its models are withdrawn and it is re-probed "
                    "from every %gs up to every %gs until it answers", kind, reason,
                    reprobe_delay_s(0, self.settings.refresh_interval_s),
                    self.settings.refresh_interval_s)
        self._wake.set()
        for on_down in list(self._listeners):
            on_down(kind, reason)

    def _log_once(self, slot: _Slot, endpoint: str, reason: str) -> None:
        key = (endpoint, reason)
        if key not in slot.logged:
            slot.logged.add(key)
            log.info("%s not available at %s: %s", slot.backend.kind, endpoint, reason)

    async def run(self, stop: asyncio.Event, on_change: Callable[[], Awaitable[None]]) -> None:
        """Probe on schedule until ``stop`` is set: a discovery pass every tick, and a re-probe of a
        down backend whenever one is due; ``on_change`` after each change of the inventory."""
        interval = self.settings.refresh_interval_s
        next_tick = time.monotonic() + interval
        announced = self._fingerprint()
        while not stop.is_set():
            self._wake.clear()
            due = min([next_tick, *(slot.next_probe_at for slot in self._slots.values()
                                    if slot.next_probe_at is not None)])
            await self._sleep(stop, due - time.monotonic())
            if stop.is_set():
                return
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + interval
                await self.refresh()
            else:
                await self.reprobe_due()
            if (current := self._fingerprint()) != announced:
                announced = current
                await on_change()

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep ``seconds``, or less if ``stop`` is set or a probe is scheduled meanwhile."""
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=max(seconds, 0.0),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def aclose(self) -> None:
        for slot in self._slots.values():
            await slot.backend.aclose()

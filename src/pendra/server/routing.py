"""Which worker runs a request, and what happens when none can.

Rules:
- A model name resolves once, here, to the id the fleet serves (``pendra.names``' rule): the exact
  id when a worker serves it, else the served id with the same ``name_key`` (case-insensitive,
  ``:latest`` and the ``library`` namespace implied); workers are sent that id. A model nobody
  serves is 404, saying whether it is in the catalogue (by catalogue id,
  alias or any variant's Ollama tag) but installed on no connected worker. A model whose workers
  are connected but lost the backend serving it (Ollama restarting) is 503 ``ModelUnavailable``
  with ``Retry-After`` instead: the outage passes, and clients retry a 503.
- ``pick``: among connected workers serving the model with a free slot, the least loaded
  (in_flight / max_concurrent, then fewer in flight, then at random), found through the hub's
  index (fleet_index.py) without scanning the fleet. When all are busy the request
  waits for a slot, at most ``queue_timeout_s`` and with at most ``MAX_WAITERS`` requests waiting
  at once (beyond that: 503 straight away); then 503 ``NoCapacity`` with ``Retry-After``.
- A request for a model that cannot do what it asks (chat on an embedding-only model, images on
  a model without image generation where it runs, transcription where no backend transcribes) is
  refused with 400 naming the model and what it does serve, before any worker is chosen; only
  workers whose copy of the model can do it are candidates.
- ``open`` opens the request on the picked worker and waits for its first frame. What went wrong
  is classified once, by ``classify``: the client's fault (a 4xx from the worker: bad input, the
  model refuses tools, the context is too long, the model is unknown there) goes back to the
  client as it is — Ollama's text, with OpenAI's error type for its status (``param``/``code``
  where known, ``context_length_exceeded``) — and is **never retried**; a worker or transport
  fault before the first byte (the worker disconnects, or answers a 5xx other than 501/503)
  releases the slot and tries the request once more on a different worker (``MAX_ATTEMPTS``); a
  503 (the worker's backend is down or restarting: a passing outage, not a fault) also tries
  another worker serving the model, and when none can, answers 503 with ``Retry-After`` (the
  worker's ``retry_after_s``, else ``RETRY_AFTER_S``); a 501 (the backend cannot do it) is final.
  When the attempts run out on worker faults, the client gets 502 ``WorkerFailed`` naming them.
  Nothing is retried once the first byte was relayed.
- For the metrics (server/metrics.py, read at scrape time) the router counts, by served model,
  the requests it tried again on another worker (``retries``) and those it answered 503
  ``NoCapacity`` because every worker stayed busy (``refused_busy``); and it tells ``on_wait``
  how long each wait for a slot lasted, whether it ended with a worker or with 503 (0 when one was
  free at once).
- A request kind newer than protocol version 1 (``frames.KIND_SINCE``: ``complete`` since 4) goes
  only to workers whose hello carried that version; the others are left out of every attempt.
  When only such older workers serve the model, the client gets 501 saying which workers to
  upgrade (nothing is sent to them: they would refuse the frame and drop the connection).
"""

from __future__ import annotations

import asyncio
import logging
import random
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from enum import Enum

from pendra.catalogue.loader import Catalogue
from pendra.errors import (BackendRejected, InvalidRequest, ModelUnavailable, NoCapacity, NotFound,
                           PendraError, UnsupportedOperation, UpstreamTimeout, WorkerFailed)
from pendra.protocol.frames import KIND_SINCE, Chunk, Chunks, End, Error, Frame, speaks
from pendra.server.fleet_index import load_key
from pendra.server.hub import Hub, RequestHandle, WorkerGone, WorkerView

log = logging.getLogger(__name__)

# Requests allowed to wait for a slot at once; more get 503 at once instead of queueing without end.
MAX_WAITERS = 256
# Seconds a 503 asks the client to wait before trying again.
RETRY_AFTER_S = 2
# Longest wait for a worker's first frame: image generation may take ~10 minutes on a busy worker.
# A dead worker is noticed much sooner, by the heartbeat timeout (WorkerGone).
FIRST_FRAME_TIMEOUT_S = 600.0
# Workers one request is tried on before the client is answered: the first, and one retry.
MAX_ATTEMPTS = 2
# The ModelInfo.types a request kind needs.
TYPE_FOR_KIND = {"chat": "chat", "complete": "chat", "embed": "embedding", "image": "image",
                 "transcribe": "transcription"}
# How many workers a "too old" refusal names before "and N more".
NAMED_WORKERS = 3
# OpenAI's error type for a worker's 4xx status (Ollama's own refusals keep their text).
_CLIENT_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                       403: "permission_error", 404: "not_found_error", 409: "conflict_error",
                       413: "invalid_request_error", 422: "invalid_request_error",
                       429: "rate_limit_error"}
# How Ollama says a prompt or input is longer than the model's context.
_CONTEXT_TOO_LONG = ("longer than the context length", "exceeds the context length",
                     "context length exceeded", "context_length_exceeded")


class Fault(Enum):
    """Whose fault a failed attempt was, which decides what happens next (see ``classify``)."""

    CLIENT = "client"  # the request itself: answer it, never retry
    FINAL = "final"  # the backend cannot do it (501): answer it, do not retry
    OUTAGE = "outage"  # the backend is down for now (503): another worker, else 503 Retry-After
    WORKER = "worker"  # the worker or the transport: another worker, else 502


class WorkerRejected(BackendRejected):
    """The worker's backend refused the request (a 4xx, or 501); it goes back to the client."""

    def __init__(self, message: str, *, status: int, kind: str, worker: WorkerView,
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message, status=status, code=code, param=param)
        self.kind = kind or BackendRejected.kind
        self.worker_id = worker.id
        self.worker_name = worker.name


@dataclass
class Opened:
    """A request that a worker has started answering: its first frame, and the rest to come."""

    handle: RequestHandle
    first: Chunk | Chunks | End
    frames: AsyncIterator[Frame]
    served: str

    @property
    def worker(self) -> WorkerView:
        return self.handle.worker


def describe(worker: WorkerView) -> str:
    return f"worker '{worker.name}' ({worker.id})"


def worker_failed(worker: WorkerView, what: str, *, earlier: str = "") -> WorkerFailed:
    message = f"{describe(worker)} {what}"
    if earlier:
        message += f"; it was the retry after {earlier}"
    return WorkerFailed(message, worker_id=worker.id, worker_name=worker.name)


def classify(failure: Error | WorkerGone) -> Fault:
    """The one place that decides whose fault a failed attempt is (see the module rules)."""
    if isinstance(failure, WorkerGone):
        return Fault.WORKER
    if 400 <= failure.status < 500:
        return Fault.CLIENT
    if failure.status == 501:
        return Fault.FINAL
    if failure.status == 503:
        return Fault.OUTAGE
    return Fault.WORKER


def error_from_frame(frame: Error, worker: WorkerView, *, earlier: str = "") -> PendraError:
    """A worker's Error frame as the client's error, by its ``classify`` verdict."""
    fault = classify(frame)
    if fault is Fault.CLIENT:
        too_long = any(text in frame.message.lower() for text in _CONTEXT_TOO_LONG)
        return WorkerRejected(frame.message, status=400 if too_long else frame.status,
                              kind=_CLIENT_ERROR_TYPES.get(frame.status, "invalid_request_error"),
                              worker=worker, code="context_length_exceeded" if too_long else None,
                              param=frame.param)
    if fault is Fault.FINAL:
        return WorkerRejected(frame.message, status=frame.status, kind=frame.kind, worker=worker)
    if fault is Fault.OUTAGE:
        return unavailable(worker, frame, earlier=earlier)
    return worker_failed(worker, f"failed: {frame.message}", earlier=earlier)


def unavailable(worker: WorkerView, frame: Error, *, earlier: str = "",
                also: str = "") -> ModelUnavailable:
    """503 with Retry-After: the worker's backend is down for now (its own hint, else ours)."""
    wait = frame.retry_after_s if frame.retry_after_s and frame.retry_after_s > 0 else RETRY_AFTER_S
    message = f"{describe(worker)} cannot serve it for now: {frame.message}"
    if also:
        message += f", and {also}"
    if earlier:
        message += f"; it was the retry after {earlier}"
    error = ModelUnavailable(message, retry_after_s=max(math.ceil(wait), 1))
    error.worker_id, error.worker_name = worker.id, worker.name  # type: ignore[attr-defined]
    return error


class Router:
    """Routes requests over one Hub; holds no state but the count of waiting requests."""

    def __init__(self, hub: Hub, catalogue: Catalogue, *, queue_timeout_s: float,
                 max_waiters: int = MAX_WAITERS,
                 on_wait: Callable[[str, float], None] | None = None) -> None:
        self.hub = hub
        self.catalogue = catalogue
        self.queue_timeout_s = queue_timeout_s
        self.max_waiters = max_waiters
        self._waiters = 0
        self._on_wait = on_wait
        self.retries: Counter[str] = Counter()  # by served model
        self.refused_busy: Counter[str] = Counter()  # 503 NoCapacity answers, by served model

    @property
    def waiting(self) -> int:
        return self._waiters

    def resolve(self, model: str) -> str:
        """The served model id for what the client typed; NotFound when nobody serves it."""
        served = self.hub.index.resolve(model)
        if served is not None:
            return served
        stranded = self.hub.index.stranded(model)
        if stranded is not None:
            worker, model_id = stranded
            raise ModelUnavailable(
                f"Model '{model_id}' is unavailable for now: the "
                f"{worker.stranded[model_id]} backend of {describe(worker)} that serves it "
                "is not answering", retry_after_s=RETRY_AFTER_S)
        raise self.not_found(model)

    def not_found(self, model: str) -> NotFound:
        if self.catalogue.find(model) is not None:
            return NotFound(f"Model '{model}' is in the catalogue but no connected worker has it "
                            "installed yet")
        return NotFound(f"Model '{model}' not found; GET /api/v1/models lists what is served now")

    def check_serves(self, kind: str, served: str) -> None:
        """400 naming the model and what it does serve, when no connected copy of it can do
        ``kind`` (chat on an embedding model, images where image generation is missing, ...)."""
        wanted = TYPE_FOR_KIND[kind]
        if self.hub.index.serving(served, wanted):
            return
        types: set[str] = set()  # the refusal's text only: every copy's types
        for worker in self.hub.serving(served):
            types.update(worker.models[served].types)
        if wanted not in types:
            does = ", ".join(sorted(types)) or "nothing Pendra can route"
            raise InvalidRequest(f"model '{served}' cannot serve {wanted} requests; it serves: "
                                 f"{does} (GET /api/v1/models?type={wanted} lists the "
                                 f"{wanted} models)", param="model", code="model_not_supported")

    def too_old(self, kind: str, served: str) -> list[str]:
        """Ids of the workers serving ``served`` for ``kind`` whose protocol predates ``kind``
        (none for the kinds every version knows); 501 when no other worker serves it."""
        if kind not in KIND_SINCE:
            return []
        serving = self.hub.index.serving(served, TYPE_FOR_KIND[kind])
        old = [w for w in serving if not speaks(w.protocol_version, kind)]
        if old and len(old) == len(serving):
            names = ", ".join(f"'{w.name}' (protocol {w.protocol_version})"
                              for w in old[:NAMED_WORKERS])
            if len(old) > NAMED_WORKERS:
                names += f" and {len(old) - NAMED_WORKERS} more"
            raise UnsupportedOperation(
                f"model '{served}' is served only by workers too old for {kind} requests: "
                f"{names}; upgrade them to a pendra worker that speaks protocol version "
                f"{KIND_SINCE[kind]} or later")
        return [w.id for w in old]

    def candidates(self, served: str, exclude: Collection[str] = (),
                   kind: str | None = None) -> list[WorkerView]:
        """Connected workers serving ``served`` (whose copy can do ``kind``), not in ``exclude``."""
        wanted = TYPE_FOR_KIND.get(kind or "")
        return [w for w in self.hub.index.serving(served, wanted) if w.id not in exclude]

    @staticmethod
    def least_loaded(workers: list[WorkerView]) -> WorkerView | None:
        """The rule ``pick`` follows, over a list (``FleetIndex.least_loaded`` keeps it without
        scanning): the free worker with the lowest ``load_key``, ties at random."""
        free = [w for w in workers if w.free > 0]
        if not free:
            return None
        return min(free, key=lambda w: (load_key(w), random.random()))

    async def pick(self, model: str, exclude: Collection[str] = (),
                   kind: str | None = None) -> WorkerView:
        """The worker to run a request for ``model`` (a served id), waiting boundedly for a slot.

        NotFound when no worker (outside ``exclude``) serves it; NoCapacity when the wait ran out
        or too many requests are already waiting.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.queue_timeout_s
        waiting = False
        try:
            wanted = TYPE_FOR_KIND.get(kind or "")
            index = self.hub.index
            while True:
                chosen = index.least_loaded(model, wanted, exclude)
                if chosen is not None:
                    if not waiting and self._on_wait is not None:
                        self._on_wait(model, 0.0)
                    return chosen
                if not index.has_candidate(model, wanted, exclude):
                    raise self.not_found(model)
                if not waiting:
                    if self._waiters >= self.max_waiters:
                        raise NoCapacity(f"every worker serving '{model}' is busy and "
                                         f"{self._waiters} requests are already waiting",
                                         retry_after_s=RETRY_AFTER_S)
                    self._waiters += 1
                    waiting = True
                remaining = deadline - loop.time()
                if remaining <= 0 or not await self.hub.wait_for_capacity(remaining):
                    raise NoCapacity(f"every worker serving '{model}' stayed busy for "
                                     f"{self.queue_timeout_s:g}s", retry_after_s=RETRY_AFTER_S)
        finally:
            if waiting:
                self._waiters -= 1
                if self._on_wait is not None:  # served or given up on, it waited this long
                    self._on_wait(model, loop.time() - started)

    async def _reserve(self, kind: str, served: str, body: dict[str, object],
                       exclude: Collection[str]) -> RequestHandle:
        while True:
            worker = await self.pick(served, exclude, kind)
            try:
                return self.hub.open_request(worker.id, kind, served, body)
            except NoCapacity:
                continue  # its last slot went between pick and open; pick again (bounded by pick)

    async def open(self, kind: str, model: str, body: dict[str, object]) -> Opened:
        """Open ``kind`` for ``model`` on a worker and wait for its first frame (see the rules)."""
        served = self.resolve(model)
        self.check_serves(kind, served)
        unable = self.too_old(kind, served)
        tried: list[WorkerView] = []
        last: Error | WorkerGone | None = None  # the last attempt's failure
        failure = ""
        for _attempt in range(MAX_ATTEMPTS):
            try:
                handle = await self._reserve(kind, served, body,
                                             [*unable, *(w.id for w in tried)])
            except (NotFound, NoCapacity) as exc:
                if last is None:
                    if isinstance(exc, NoCapacity):
                        self.refused_busy[served] += 1
                    raise
                other = ("no other connected worker serves it" if isinstance(exc, NotFound)
                         else "every other worker serving it stayed busy")
                raise self._gave_up(tried[-1], last, failure, other) from exc
            opened: Opened | None = None
            try:
                frames = aiter(handle)
                try:
                    async with asyncio.timeout(FIRST_FRAME_TIMEOUT_S):
                        first = await anext(frames)
                except TimeoutError as exc:
                    raise UpstreamTimeout(f"{describe(handle.worker)} sent nothing for "
                                          f"{FIRST_FRAME_TIMEOUT_S:g}s") from exc
                except WorkerGone as exc:
                    first = exc
                if isinstance(first, Chunk | Chunks | End):
                    opened = Opened(handle, first, frames, served)
                    return opened
                earlier = f"{describe(tried[-1])} {failure}" if tried else ""
                fault = classify(first)
                if fault in (Fault.CLIENT, Fault.FINAL) or len(tried) + 1 >= MAX_ATTEMPTS:
                    if isinstance(first, WorkerGone):
                        raise worker_failed(handle.worker, "disconnected before answering",
                                            earlier=earlier) from first
                    raise error_from_frame(first, handle.worker, earlier=earlier)
                last = first
                failure = ("disconnected before answering" if isinstance(first, WorkerGone)
                           else f"failed: {first.message}")
                log.warning("%s %s; trying another worker", describe(handle.worker), failure)
                self.retries[served] += 1
                tried.append(handle.worker)
            finally:
                if opened is None:
                    await asyncio.shield(handle.aclose())
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _gave_up(worker: WorkerView, last: Error | WorkerGone, failure: str,
                 other: str) -> PendraError:
        """No other worker could take the request after ``worker`` failed it with ``last``."""
        if isinstance(last, Error) and classify(last) is Fault.OUTAGE:
            return unavailable(worker, last, also=other)
        return worker_failed(worker, f"{failure}, and {other}")

"""Which worker runs a request, and what happens when none can.

Rules:
- A model name resolves to what the fleet serves: the exact id, else ``<name>:latest`` for a bare
  name. A model nobody serves is 404, saying whether it is in the catalogue (by catalogue id,
  alias or any variant's Ollama tag) but installed on no connected worker. A model whose workers
  are connected but lost the backend serving it (Ollama restarting) is 503 ``ModelUnavailable``
  with ``Retry-After`` instead: the outage passes, and clients retry a 503.
- ``pick``: among connected workers serving the model with a free slot, the least loaded
  (in_flight / max_concurrent, then fewer in flight, then at random). When all are busy the request
  waits for a slot, at most ``queue_timeout_s`` and with at most ``MAX_WAITERS`` requests waiting
  at once (beyond that: 503 straight away); then 503 ``NoCapacity`` with ``Retry-After``.
- ``open`` opens the request on the picked worker and waits for its first frame. If the worker
  fails before that first byte — it disconnects, or answers an error with status >= 500, which is
  the worker's or backend's fault, not the client's — the slot is released and the request is
  tried once more on a different worker. If that fails too, or no other worker serves the model,
  the client gets 502 ``WorkerFailed`` naming the worker. A 4xx from the worker (e.g. Ollama's
  "does not support tools") is the client's answer: ``WorkerRejected`` with that status, no retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

from pendra.catalogue.loader import Catalogue
from pendra.errors import (BackendRejected, ModelUnavailable, NoCapacity, NotFound, UpstreamTimeout,
                           WorkerFailed)
from pendra.protocol.frames import Chunk, End, Error, Frame
from pendra.server.hub import Hub, RequestHandle, WorkerGone, WorkerView

log = logging.getLogger(__name__)

# Requests allowed to wait for a slot at once; more get 503 at once instead of queueing without end.
MAX_WAITERS = 256
# Seconds a 503 asks the client to wait before trying again.
RETRY_AFTER_S = 2
# Longest wait for a worker's first frame: image generation may take ~10 minutes on a busy worker.
# A dead worker is noticed much sooner, by the heartbeat timeout (WorkerGone).
FIRST_FRAME_TIMEOUT_S = 600.0


class WorkerRejected(BackendRejected):
    """The worker's backend refused the request (a 4xx); it goes back to the client as it is."""

    def __init__(self, message: str, *, status: int, kind: str, worker: WorkerView) -> None:
        super().__init__(message, status=status)
        self.kind = kind or BackendRejected.kind
        self.worker_id = worker.id
        self.worker_name = worker.name


@dataclass
class Opened:
    """A request that a worker has started answering: its first frame, and the rest to come."""

    handle: RequestHandle
    first: Chunk | End
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


def error_from_frame(frame: Error, worker: WorkerView, *, earlier: str = "") -> WorkerFailed | WorkerRejected:
    """A worker's Error frame as the client's error: 4xx as it is, anything else 502."""
    if 400 <= frame.status < 500:
        return WorkerRejected(frame.message, status=frame.status, kind=frame.kind, worker=worker)
    return worker_failed(worker, f"failed: {frame.message}", earlier=earlier)


class Router:
    """Routes requests over one Hub; holds no state but the count of waiting requests."""

    def __init__(self, hub: Hub, catalogue: Catalogue, *, queue_timeout_s: float,
                 max_waiters: int = MAX_WAITERS) -> None:
        self.hub = hub
        self.catalogue = catalogue
        self.queue_timeout_s = queue_timeout_s
        self.max_waiters = max_waiters
        self._waiters = 0

    @property
    def waiting(self) -> int:
        return self._waiters

    def resolve(self, model: str) -> str:
        """The served model id for what the client typed; NotFound when nobody serves it."""
        candidates = (model, f"{model}:latest")
        for candidate in candidates:
            if self.hub.serving(candidate):
                return candidate
        for worker in self.hub.connected():
            for candidate in candidates:
                if candidate in worker.stranded:
                    raise ModelUnavailable(
                        f"Model '{candidate}' is unavailable for now: the "
                        f"{worker.stranded[candidate]} backend of {describe(worker)} that serves it "
                        "is not answering", retry_after_s=RETRY_AFTER_S)
        raise self.not_found(model)

    def not_found(self, model: str) -> NotFound:
        if self.catalogue.find(model) is not None:
            return NotFound(f"Model '{model}' is in the catalogue but no connected worker has it "
                            "installed yet")
        return NotFound(f"Model '{model}' not found; GET /api/v1/models lists what is served now")

    def candidates(self, served: str, exclude: Collection[str] = ()) -> list[WorkerView]:
        return [w for w in self.hub.serving(served) if w.id not in exclude]

    @staticmethod
    def least_loaded(workers: list[WorkerView]) -> WorkerView | None:
        free = [w for w in workers if w.free > 0]
        if not free:
            return None
        return min(free, key=lambda w: (w.in_flight / w.max_concurrent, w.in_flight,
                                        random.random()))

    async def pick(self, model: str, exclude: Collection[str] = ()) -> WorkerView:
        """The worker to run a request for ``model`` (a served id), waiting boundedly for a slot.

        NotFound when no worker (outside ``exclude``) serves it; NoCapacity when the wait ran out
        or too many requests are already waiting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.queue_timeout_s
        waiting = False
        try:
            while True:
                workers = self.candidates(model, exclude)
                if not workers:
                    raise self.not_found(model)
                chosen = self.least_loaded(workers)
                if chosen is not None:
                    return chosen
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

    async def _reserve(self, kind: str, served: str, body: dict[str, object],
                       exclude: Collection[str]) -> RequestHandle:
        while True:
            worker = await self.pick(served, exclude)
            try:
                return await self.hub.open_request(worker.id, kind, served, body)
            except NoCapacity:
                continue  # its last slot went between pick and open; pick again (bounded by pick)

    async def open(self, kind: str, model: str, body: dict[str, object]) -> Opened:
        """Open ``kind`` for ``model`` on a worker and wait for its first frame (see the rules)."""
        served = self.resolve(model)
        failed: WorkerView | None = None
        failure = ""
        for _attempt in range(2):
            try:
                handle = await self._reserve(kind, served, body,
                                             () if failed is None else (failed.id,))
            except (NotFound, NoCapacity) as exc:
                if failed is None:
                    raise
                other = ("no other connected worker serves it" if isinstance(exc, NotFound)
                         else "every other worker serving it stayed busy")
                raise worker_failed(failed, f"{failure}, and {other}") from exc
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
                    failure = "disconnected before answering"
                    if failed is not None:
                        raise worker_failed(handle.worker, failure,
                                            earlier=f"{describe(failed)} {failure}") from exc
                    log.warning("%s %s; retrying elsewhere", describe(handle.worker), failure)
                    failed = handle.worker
                    continue
                if isinstance(first, Error):
                    if first.status < 500 or failed is not None:
                        raise error_from_frame(first, handle.worker,
                                               earlier=f"{describe(failed)} {failure}"
                                               if failed else "")
                    failure = f"failed: {first.message}"
                    log.warning("%s %s; retrying elsewhere", describe(handle.worker), failure)
                    failed = handle.worker
                    continue
                assert isinstance(first, Chunk | End)
                opened = Opened(handle, first, frames, served)
                return opened
            finally:
                if opened is None:
                    await asyncio.shield(handle.aclose())
        raise AssertionError("unreachable: the second attempt returns or raises")

"""Runs the requests and model operations the control plane sends to this worker.

Rules:
- Each request and each install/uninstall is one task in the runner's TaskGroup, tracked by its id,
  so ``cancel {id}`` / ``cancel_op {op_id}`` cancels exactly that task. Cancelling the task closes
  the HTTP stream to the backend, which aborts the work there; a cancelled request sends nothing
  further. A dropped socket (``on_disconnect``) cancels every request and operation: the server has
  already failed them.
- At most ``max_concurrent`` requests run at once. The server knows the number and should not send
  more; an extra one is refused at once with ``error 503`` instead of being queued.
- ``chat`` and ``complete`` stream (one path, ``_stream``): each item of the backend's result goes
  out as a ``chunk`` as it comes, then ``end`` with the usage and finish reason; the other kinds
  answer with one ``chunk`` and ``end``.
- A request ends with exactly one ``end`` or ``error`` frame (or nothing, when cancelled). Its slot
  is freed *before* that frame goes out, so the server may reuse it the moment it reads the frame.
- A request whose backend cannot be reached (``BackendUnavailable``) or stalls (``BackendTimeout``)
  makes the registry re-check that backend at once; an unreachable one is answered ``error 503``
  with ``retry_after_s`` (when the backend will next be probed). When the registry marks a backend
  down — that re-check, or a refresh tick's verification failing — every request in flight on it is
  cancelled at once and answered ``error 503 backend_unavailable`` instead of hanging.
- Install progress is relayed at most every ``PROGRESS_INTERVAL_S`` (the latest figure, so it is
  never older than that while it changes, and always the final one), as the backend reports it:
  the backend reading its install stream owns "never backwards" (Ollama: ``PullProgress``).
- After an install or removal the backends are re-discovered at once and ``on_models_changed`` is
  awaited before ``done``, so the control plane hears of the new inventory without waiting a tick.
- A cancelled operation is reported as ``OpFailed.cancelled`` (status ``CANCELLED_STATUS``, the
  outcome ``cancelled``) only when the server asked for it with ``cancel_op``; no other failure is
  sent with that status.

Use: ``async with Runner(...) as runner:`` then hand ``runner`` to the Connection as its
FrameHandler. For an orderly shutdown call ``stop_accepting()`` then ``await drain(timeout_s)``.
With ``metrics`` (worker/metrics.py) each answered request is timed once, as it ends, and a
chat's first chunk once; nothing is done per chunk beyond noticing the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from pendra.backends.base import Backend, InstallProgress, ModelInfo, Usage
from pendra.backends.registry import BackendRegistry
from pendra.errors import BackendTimeout, BackendUnavailable, PendraError, UnsupportedOperation
from pendra.protocol.frames import (CANCELLED_STATUS, Cancel, CancelOp, Chunk, End, Error, Frame,
                                    Install, OpDone, OpFailed, Progress, Request, Uninstall)
from pendra.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

Send = Callable[[Frame], Awaitable[bool]]
# The request kinds whose backend call streams its answer (a ChatResult), chunk by chunk.
STREAMED_KINDS = frozenset({"chat", "complete"})
# At most four progress frames a second per operation: smooth in the console, cheap on the socket.
PROGRESS_INTERVAL_S = 0.25


class Runner:
    def __init__(self, registry: BackendRegistry, send: Send, *, max_concurrent: int,
                 on_models_changed: Callable[[], Awaitable[None]],
                 metrics: WorkerMetrics | None = None) -> None:
        self.registry = registry
        self.metrics = metrics
        # request id -> (started, request kind, backend kind once known): for the metrics
        self._timing: dict[str, tuple[float, str, str]] = {}
        self.send = send
        self.max_concurrent = max_concurrent
        self.on_models_changed = on_models_changed
        self._requests: dict[str, asyncio.Task[None]] = {}
        self._backend_of: dict[str, str] = {}  # request id -> backend kind, once it has one
        self._ops: dict[str, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._accepting = True

    async def __aenter__(self) -> "Runner":
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._unsubscribe = self.registry.subscribe(self.fail_backend)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._unsubscribe()
        self._accepting = False
        self.cancel_all()
        assert self._group is not None
        return await self._group.__aexit__(*exc_info)

    @property
    def in_flight(self) -> int:
        """Requests running now (operations not counted)."""
        return len(self._requests)

    @property
    def accepting(self) -> bool:
        """False once shutdown has begun: new work is refused."""
        return self._accepting

    @property
    def worker_name(self) -> str:
        return self.registry.settings.worker_name

    def stop_accepting(self) -> None:
        """Shutdown, step one: refuse new requests and operations with 503 from now on."""
        self._accepting = False

    async def drain(self, timeout_s: float) -> None:
        """Let running requests finish for up to ``timeout_s``, then cancel whatever is left."""
        pending = list(self._requests.values())
        if pending:
            log.info("waiting up to %.0fs for %d request(s) to finish", timeout_s, len(pending))
            await asyncio.wait(pending, timeout=timeout_s)
        self.cancel_all()

    def cancel_all(self) -> None:
        for task in [*self._requests.values(), *self._ops.values()]:
            task.cancel()

    def fail_backend(self, kind: str, reason: str) -> None:
        """``kind``'s backend went down: fail every request in flight on it now (error 503)."""
        doomed = [(request_id, task) for request_id, task in self._requests.items()
                  if self._backend_of.get(request_id) == kind and not task.done()]
        if not doomed:
            return
        log.warning("failing %d request(s) in flight on %s: it stopped answering", len(doomed),
                    kind)
        error = dict(status=503, kind=BackendUnavailable.kind,
                     retry_after_s=self.registry.retry_after_s(kind),
                     message=f"the {kind} backend of worker '{self.worker_name}' stopped answering "
                             f"during the request ({reason})")
        for request_id, task in doomed:
            task.cancel()
            self._spawn(self._report_failed(request_id, task, Error(id=request_id, **error),
                                            self._timing.get(request_id)),
                        f"failed:{request_id}")

    async def _report_failed(self, request_id: str, task: asyncio.Task[None], error: Error,
                             timing: tuple[float, str, str] | None = None) -> None:
        await asyncio.wait([task])  # its backend stream is closed (and its slot freed) first
        if task.cancelled():  # it may have ended (and said so) before the cancel landed
            if timing is not None and self.metrics is not None:
                started, kind, backend = timing
                self.metrics.request_done(backend, kind, error.status, time.monotonic() - started)
            await self.send(error)

    # --- FrameHandler ------------------------------------------------------------------------------

    async def on_frame(self, frame: Frame) -> None:
        if isinstance(frame, Request):
            await self._accept_request(frame)
        elif isinstance(frame, Cancel):
            if (task := self._requests.get(frame.id)) is not None:
                task.cancel()
        elif isinstance(frame, Install | Uninstall):
            await self._accept_op(frame)
        elif isinstance(frame, CancelOp):
            if (task := self._ops.get(frame.op_id)) is not None and not task.cancelling():
                task.cancel()
                self._spawn(self._report_cancelled(frame.op_id, task), f"cancelled:{frame.op_id}")
        else:
            log.debug("runner ignores %s frames", frame.type)

    async def on_disconnect(self) -> None:
        if self._requests or self._ops:
            log.warning("connection lost: cancelling %d request(s) and %d operation(s)",
                        len(self._requests), len(self._ops))
        self.cancel_all()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        if self._group is None:
            work.close()
            raise RuntimeError("Runner used outside `async with`")
        return self._group.create_task(work, name=name)

    def _track(self, table: dict[str, asyncio.Task[None]], key: str, task: asyncio.Task[None]) -> None:
        # A done-callback, not a `finally`: a task cancelled before it starts never runs its body.
        table[key] = task
        task.add_done_callback(lambda done: table.pop(key) if table.get(key) is done else None)

    # --- requests ----------------------------------------------------------------------------------

    async def _accept_request(self, frame: Request) -> None:
        if frame.id in self._requests:
            log.warning("ignoring request %s: a request with that id is already running", frame.id)
            return
        refusal = ("shutting down" if not self._accepting else
                   f"at capacity ({self.max_concurrent} running)"
                   if len(self._requests) >= self.max_concurrent else "")
        if refusal:
            await self.send(Error(id=frame.id, status=503, kind="overloaded_error",
                                  message=f"worker '{self.worker_name}' {refusal}"))
            return
        if self.metrics is not None:
            self._timing[frame.id] = (time.monotonic(), frame.kind, "")
        task = self._spawn(self._request(frame), f"request:{frame.id}")
        self._track(self._requests, frame.id, task)
        if self.metrics is not None:
            task.add_done_callback(lambda _: self._timing.pop(frame.id, None))

    async def _finish(self, request_id: str, frame: End | Error) -> None:
        self._requests.pop(request_id, None)  # free the slot before the server can reuse it
        if (timing := self._timing.pop(request_id, None)) is not None and self.metrics:
            started, kind, backend = timing
            self.metrics.request_done(backend, kind, frame.status if isinstance(frame, Error)
                                      else 200, time.monotonic() - started)
        await self.send(frame)

    async def _request(self, frame: Request) -> None:
        try:
            try:
                backend, model = self.registry.backend_for(frame.model)
                self._backend_of[frame.id] = model.backend
                if (timing := self._timing.get(frame.id)) is not None:
                    self._timing[frame.id] = (timing[0], timing[1], model.backend)
                if frame.kind in STREAMED_KINDS:
                    await self._stream(frame, backend, model)
                    return
                data, usage = await self._single(frame, backend, model)
            finally:
                kind = self._backend_of.pop(frame.id, None)  # from here, not failed from outside
            if await self.send(Chunk(id=frame.id, data=data)):
                await self._finish(frame.id, End(id=frame.id, usage=usage.to_dict()))
        except BackendUnavailable as exc:
            retry_after_s = exc.retry_after_s
            if kind is not None:
                retry_after_s = await self.registry.recheck(kind) or retry_after_s
            await self._finish(frame.id, Error(id=frame.id, status=exc.status, message=exc.message,
                                               kind=exc.kind, retry_after_s=retry_after_s or 1.0))
        except BackendTimeout as exc:
            log.warning("request %s (%s): %s", frame.id, frame.model, exc.message)
            await self._finish(frame.id, Error(id=frame.id, status=exc.status, message=exc.message,
                                               kind=exc.kind))
            if kind is not None:
                await self.registry.recheck(kind)  # a hung backend, or only this stream?
        except PendraError as exc:
            await self._finish(frame.id, Error(id=frame.id, status=exc.status, message=exc.message,
                                               kind=exc.kind, param=exc.param))
        except Exception as exc:  # the task boundary: one bad request must not end the worker
            log.exception("request %s (%s %s) failed unexpectedly", frame.id, frame.kind, frame.model)
            await self._finish(frame.id, Error(id=frame.id, status=500, kind="internal_error",
                                               message=f"worker '{self.worker_name}' failed: "
                                                       f"{type(exc).__name__}: {exc}"))

    async def _stream(self, frame: Request, backend: Backend, model: ModelInfo) -> None:
        """A chat or a completion: each item as a Chunk as it comes, then End (one code path)."""
        # A backend written before ``complete`` existed may lack it: a clear 501, not a crash.
        run = backend.chat if frame.kind == "chat" else getattr(backend, "complete", None)
        if run is None:
            raise UnsupportedOperation(f"the {backend.kind} backend of worker '{self.worker_name}' "
                                       "does not serve legacy completions")
        result = await run(model, frame.body)
        first = frame.id in self._timing  # the first chunk is timed (when metrics are on)
        try:
            async for data in result.chunks:
                if first:
                    first = False
                    self._first_chunk(frame.id, model.backend)
                if not await self.send(Chunk(id=frame.id, data=data)):
                    return  # the socket is gone and the server has failed the request: stop work
        finally:
            await _aclose(result.chunks)  # closes the backend's HTTP stream if we left early
        await self._finish(frame.id, End(id=frame.id, usage=result.usage.to_dict(),
                                         finish_reason=result.finish_reason))

    def _first_chunk(self, request_id: str, backend: str) -> None:
        timing = self._timing.get(request_id)
        if timing is not None and self.metrics is not None:
            self.metrics.first_chunk_after(backend, time.monotonic() - timing[0])

    async def _single(self, frame: Request, backend: Backend,
                      model: ModelInfo) -> tuple[dict[str, Any], Usage]:
        if frame.kind == "embed":
            return await backend.embed(model, frame.body)
        if frame.kind == "image":
            return await backend.generate_image(model, frame.body)
        return await backend.transcribe(model, frame.body)

    # --- model operations --------------------------------------------------------------------------

    async def _accept_op(self, frame: Install | Uninstall) -> None:
        if frame.op_id in self._ops:
            log.warning("ignoring %s %s: an operation with that id is running", frame.type,
                        frame.op_id)
            return
        if not self._accepting:
            await self.send(OpFailed(op_id=frame.op_id, status=503,
                                     message=f"worker '{self.worker_name}' is shutting down"))
            return
        task = self._spawn(self._operation(frame), f"{frame.type}:{frame.op_id}")
        self._track(self._ops, frame.op_id, task)

    async def _operation(self, frame: Install | Uninstall) -> None:
        try:
            backend = self.registry.backend_of_kind(frame.backend)
            if isinstance(frame, Install):
                await self._install(frame, backend)
            else:
                await backend.uninstall(self.registry.native_name(frame.backend, frame.model))
        except PendraError as exc:
            await self._fail_op(frame.op_id, exc.message, exc.status)
            return
        except Exception as exc:  # the task boundary, as for requests
            log.exception("%s %s of %s failed unexpectedly", frame.type, frame.op_id, frame.model)
            await self._fail_op(frame.op_id, f"worker '{self.worker_name}' failed: "
                                             f"{type(exc).__name__}: {exc}", 500)
            return
        # Done on the backend: from here a late cancel_op must not turn success into "cancelled".
        self._ops.pop(frame.op_id, None)
        log.info("%s of %s finished", frame.type, frame.model)
        try:
            await self.registry.refresh()
            await self.on_models_changed()
        except PendraError as exc:  # the operation itself succeeded; the next tick re-discovers
            log.warning("re-discovery after %s of %s failed: %s", frame.type, frame.model,
                        exc.message)
        await self.send(OpDone(op_id=frame.op_id))

    async def _fail_op(self, op_id: str, message: str, status: int) -> None:
        self._ops.pop(op_id, None)
        if status == CANCELLED_STATUS:  # that status means "cancelled"; this is a failure
            status = 502
        await self.send(OpFailed(op_id=op_id, message=message, status=status))

    async def _install(self, frame: Install, backend: Backend) -> None:
        relay = ProgressRelay(frame.op_id, self.send)
        ticker = self._spawn(relay.tick(), f"progress:{frame.op_id}")
        try:
            await backend.install(frame.model, relay.update)
        finally:
            ticker.cancel()
        await relay.flush()  # the final figure, before "done"

    async def _report_cancelled(self, op_id: str, task: asyncio.Task[None]) -> None:
        await asyncio.wait([task])
        if task.cancelled():  # it may have finished (and said so) before the cancel landed
            await self.send(OpFailed.cancelled(op_id))


class ProgressRelay:
    """One operation's progress: keeps the latest figure, sends it at most every interval.

    ``update`` is the backend's callback and does no I/O; ``tick`` (a task) and ``flush`` send.
    """

    def __init__(self, op_id: str, send: Send, *, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.op_id = op_id
        self._send = send
        self.interval_s = interval_s
        self._latest: InstallProgress | None = None
        self._sent: Progress | None = None

    def update(self, progress: InstallProgress) -> None:
        self._latest = progress

    async def flush(self) -> None:
        """Send the latest figure if it differs from the last one sent."""
        if self._latest is None:
            return
        frame = Progress(op_id=self.op_id, status=self._latest.status,
                         completed=self._latest.completed, total=self._latest.total)
        if frame != self._sent:
            self._sent = frame
            await self._send(frame)

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()


async def _aclose(chunks: AsyncIterator[dict[str, Any]]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()

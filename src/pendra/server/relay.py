"""Relaying one inference request to a worker and its answer back to the client.

Rules:
- The body goes to the worker as the edge validated it (api/*_schema.py: typed fields in canonical
  form, extra fields such as Ollama ``options`` included); only the model name is resolved to the
  id the fleet serves.
- The request's ``Dialect`` (server/dialect.py) shapes the answer; the relay never learns a
  dialect's shapes. OpenAI's own routes pass ``OpenAIPassThrough``.
- A non-streaming answer is the worker's single Chunk, given to ``Dialect.whole`` and returned as
  JSON once the End arrives (or as the dialect's optional ``response`` makes it: transcription's
  text formats are text/plain).
- A streaming answer is Server-Sent Events written by the dialect's ``EventWriter``, flushed as
  frames arrive (every frame that has arrived by then goes out in one write): OpenAI's
  ``data: <chunk json>`` per chunk, then ``data: [DONE]``. A failure after the stream began (an
  Error frame, the worker dropping, the stream going idle) is sent as the dialect's one error
  event and the stream ends *without* its closing events: the client sees an error, never a hang
  or a clean end.
- ``Dialect.settle`` runs after an answer that ended well, before the clean-up.
- A client that goes away (before or during the answer) cancels the request on its worker; one
  watcher task per wait notices it (``unless_client_leaves``), the work runs in the request's task.
- Before a worker is chosen, the key's limits admit the request (server/limits.py: 403 for a
  model the key may not use, 429 with Retry-After and the x-ratelimit headers); the lease it gets
  is finished exactly where its usage row is written (``_ended``), which returns its concurrency
  slot and charges the tokens it used. A successful answer carries the lease's headers.
- Every relayed request leaves exactly one usage row: counts, timings and statuses, never content.
- Clean-up (release the worker's slot, cancel, queue the usage row) runs shielded in ``finally``:
  a cancelled request task must still give its slot back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pendra.errors import PendraError, UpstreamTimeout
from pendra.protocol.frames import Chunk, Chunks, End, Error, Frame
from pendra.server import sse
from pendra.server.client_json import JSONBytesResponse
from pendra.server.dialect import Dialect, EventWriter, OpenAIPassThrough
from pendra.server.errors import worker_headers
from pendra.server.hub import WorkerGone
from pendra.server.key_index import KeyIndex
from pendra.server.limits import NO_LEASE, Lease, Limiter
from pendra.server.routing import Opened, Router, describe, error_from_frame, worker_failed
from pendra.server.usage import CLIENT_CLOSED, UsageMeter, UsageWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

# Longest silence between two frames of a streaming answer before the client gets a 504 error
# event (a live worker that stopped producing; a dead one is caught sooner by the heartbeat).
STREAM_IDLE_TIMEOUT_S = 300.0
# The request kinds a worker can stream.
STREAMING_KINDS = frozenset({"chat", "complete"})


class ClientGone(Exception):
    """The client disconnected while we were waiting on its behalf (not a PendraError: no one is
    left to send an error to)."""


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_client_leaves(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` in this task until it ends or the client disconnects (then it is cancelled:
    ClientGone). One watcher task per call: ``work`` runs in the caller's task, and the watcher
    cancels that task when the client goes. A cancellation from elsewhere (shutdown) stays one."""
    owner = asyncio.current_task()
    assert owner is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _disconnected(receive)
        gone = True
        owner.cancel()  # delivered where ``work`` waits: it never runs while the watcher does

    watcher = asyncio.create_task(watch(), name="client-watch")
    try:
        return await work
    except asyncio.CancelledError as exc:
        if gone and owner.uncancel() == 0:
            raise ClientGone() from exc  # the cancellation was ours, and is consumed here
        raise
    finally:
        watcher.cancel()


class Relay:
    """The inference service: route a request, relay the answer, meter it."""

    def __init__(self, router: Router, usage: UsageWriter, keys: KeyIndex | None = None,
                 limiter: Limiter | None = None) -> None:
        self.router = router
        self.usage = usage
        self.keys = keys
        self.limiter = limiter

    def _admit(self, key_id: str | None, model: str) -> Lease:
        if key_id is None or self.keys is None or self.limiter is None:
            return NO_LEASE
        key = self.keys.get(key_id)
        if key is None:  # revoked between authentication and here: nothing left to limit
            return NO_LEASE
        return self.limiter.admit(key.id, key.name, key.limits, model)

    async def respond(self, request: Request, kind: str, body: dict[str, Any],
                      key_id: str | None, dialect: Dialect | None = None) -> Response:
        """Route ``body`` (a worker request of ``kind``) and answer in ``dialect`` (OpenAI's own
        shapes by default)."""
        dialect = dialect or OpenAIPassThrough(kind)
        stream = kind in STREAMING_KINDS and bool(body.get("stream"))
        meter = UsageMeter(request_id=getattr(request.state, "request_id", ""),
                           kind=dialect.usage_kind,
                           model_requested=str(body.get("model", "")), key_id=key_id,
                           stream=stream)
        try:
            lease = self._admit(key_id, meter.model_requested)
        except PendraError as exc:
            meter.failed(exc.status, exc.message)
            self.usage.submit(meter.record())
            raise
        try:
            opened = await unless_client_leaves(request.receive,
                                                self.router.open(kind, meter.model_requested, body))
        except ClientGone:
            meter.failed(CLIENT_CLOSED, "client closed the connection while waiting for a worker")
            _ended(meter, self.usage, lease)
            return Response(status_code=CLIENT_CLOSED)
        except BaseException as exc:
            if isinstance(exc, PendraError):
                meter.failed(exc.status, exc.message)
                if worker_id := getattr(exc, "worker_id", ""):
                    meter.worker(worker_id, getattr(exc, "worker_name", ""))
            else:
                meter.failed(500, f"{type(exc).__name__} while waiting for a worker")
            _ended(meter, self.usage, lease)
            raise
        meter.answered()
        meter.model_served = opened.served
        meter.worker(opened.worker.id, opened.worker.name)
        if stream:
            return EventStream(opened, meter, self.usage, dialect, lease)
        return await self._whole(request, opened, meter, dialect, lease)

    async def _whole(self, request: Request, opened: Opened, meter: UsageMeter,
                     dialect: Dialect, lease: Lease) -> Response:
        try:
            data = await unless_client_leaves(request.receive, collect(opened, meter))
            answer = dialect.whole(data)
            await dialect.settle(answer)
            headers = worker_headers(opened.worker.id, opened.worker.name) | lease.headers
            respond = getattr(dialect, "response", None)  # optional: a whole answer not in JSON
            if respond is not None:
                response: Response = respond(answer, headers)
                return response
            return JSONBytesResponse(answer, headers=headers)
        except ClientGone:
            meter.failed(CLIENT_CLOSED, "client closed the connection before the answer")
            return Response(status_code=CLIENT_CLOSED)
        except PendraError as exc:
            meter.failed(exc.status, exc.message)
            raise
        finally:
            await asyncio.shield(_finish(opened, meter, self.usage, lease))


def _ended(meter: UsageMeter, usage: UsageWriter, lease: Lease) -> None:
    """The one end of every admitted request: its usage row, and its lease settled."""
    usage.submit(meter.record())
    lease.finish(meter.prompt_tokens + meter.completion_tokens)


async def _finish(opened: Opened, meter: UsageMeter, usage: UsageWriter, lease: Lease) -> None:
    try:
        await opened.handle.aclose()  # sends Cancel to the worker if the request had not ended
    finally:
        _ended(meter, usage, lease)


async def _next_frame(opened: Opened, timeout_s: float) -> Frame:
    try:
        async with asyncio.timeout(timeout_s):
            return await anext(opened.frames)
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{describe(opened.worker)} sent nothing for {timeout_s:g}s") from exc
    except StopAsyncIteration as exc:
        raise worker_failed(opened.worker, "ended the request without a result") from exc
    except WorkerGone as exc:
        raise worker_failed(opened.worker, "disconnected during the request") from exc


async def collect(opened: Opened, meter: UsageMeter) -> dict[str, Any]:
    """A non-streaming answer: the (last) Chunk's data, once the End has arrived."""
    data: dict[str, Any] | None = None
    frame: Frame = opened.first
    while True:
        if isinstance(frame, Chunk):
            data = frame.data
        elif isinstance(frame, Chunks):
            data = frame.data[-1]
        elif isinstance(frame, End):
            meter.tokens(frame.usage)
            if data is None:
                raise worker_failed(opened.worker, "ended the request without a response body")
            return data
        elif isinstance(frame, Error):
            raise error_from_frame(frame, opened.worker)
        frame = await _next_frame(opened, STREAM_IDLE_TIMEOUT_S)


class EventStream(Response):
    """The SSE answer of a streaming request; owns the request until the stream ends either way."""

    media_type = sse.MEDIA_TYPE

    def __init__(self, opened: Opened, meter: UsageMeter, usage: UsageWriter,
                 dialect: Dialect, lease: Lease = NO_LEASE) -> None:
        self.opened = opened
        self.meter = meter
        self.usage = usage
        self.dialect = dialect
        self.lease = lease
        self.writer: EventWriter = dialect.events()
        self.ended_well = False
        self.status_code = 200
        self.background = None
        self.init_headers(worker_headers(opened.worker.id, opened.worker.name) | sse.HEADERS
                          | lease.headers)
        self.finished = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await unless_client_leaves(receive, self._pump(send))
        except ClientGone:
            self.meter.failed(CLIENT_CLOSED, "client closed the connection mid-stream")
        finally:
            await asyncio.shield(_finish(self.opened, self.meter, self.usage, self.lease))

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        frames: list[Frame] = [self.opened.first]
        while True:
            frames += self.opened.handle.ready()  # all that has arrived goes out in one write
            body, ended = self._events(frames)
            if body:
                await self._body(send, body)
            if ended:
                if self.ended_well:
                    await self.dialect.settle(None)
                break
            try:
                frames = [await _next_frame(self.opened, STREAM_IDLE_TIMEOUT_S)]
            except PendraError as exc:
                await self._body(send, self._error(exc))
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _events(self, frames: list[Frame]) -> tuple[bytes, bool]:
        """The SSE events for ``frames``, and whether the stream ends with them."""
        parts: list[bytes] = []
        writer = self.writer
        for frame in frames:
            if isinstance(frame, Chunk):
                parts.append(writer.chunk(frame.data))
            elif isinstance(frame, Chunks):
                parts.extend(writer.chunk(data) for data in frame.data)
            elif isinstance(frame, End):
                self.meter.tokens(frame.usage)
                parts.append(writer.end(frame.usage, frame.finish_reason))
                self.ended_well = True
                return b"".join(parts), True
            elif isinstance(frame, Error):
                parts.append(self._error(error_from_frame(frame, self.opened.worker)))
                return b"".join(parts), True
        return b"".join(parts), False

    def _error(self, exc: PendraError) -> bytes:
        """The error event that ends a failed stream (never followed by the closing events)."""
        self.meter.failed(exc.status, exc.message)
        log.warning("stream %s ended with an error: %s", self.meter.request_id, exc.message)
        return self.writer.fail(exc)

    @staticmethod
    async def _body(send: Send, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

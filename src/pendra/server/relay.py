"""Relaying one inference request to a worker and its answer back to the client.

Rules:
- The body goes to the worker as the edge validated it (api/*_schema.py: typed fields in canonical
  form, extra fields such as Ollama ``options`` included); only the model name is resolved to the
  id the fleet serves.
- A non-streaming answer is the worker's single Chunk, returned as JSON once the End arrives, or
  as the endpoint's ``shape`` makes it (a transcription's text is text/plain).
- A streaming answer is Server-Sent Events (encoded by ``sse``): ``data: <chunk json>\\n\\n`` per
  piece of a Chunk or Chunks frame, flushed as it arrives (every frame that has arrived by then
  goes out in one write), then ``data: [DONE]\\n\\n``. A failure after the stream began (an Error
  frame, the worker dropping, the stream going idle) is sent as one ``data: {"error": {...}}\\n\\n``
  event and the stream ends *without* ``[DONE]``: the client sees an error, never a hang or a
  clean end.
- A client that goes away (before or during the answer) cancels the request on its worker; one
  watcher task per wait notices it (``unless_client_leaves``), the work runs in the request's task.
- Every relayed request leaves exactly one usage row: counts, timings and statuses, never content.
- Clean-up (release the worker's slot, cancel, queue the usage row) runs shielded in ``finally``:
  a cancelled request task must still give its slot back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pendra.errors import PendraError, UpstreamTimeout
from pendra.protocol.frames import Chunk, Chunks, End, Error, Frame
from pendra.server import sse
from pendra.server.client_json import JSONBytesResponse
from pendra.server.errors import error_body, worker_headers
from pendra.server.hub import WorkerGone
from pendra.server.routing import Opened, Router, describe, error_from_frame, worker_failed
from pendra.server.usage import CLIENT_CLOSED, UsageMeter, UsageWriter

log = logging.getLogger(__name__)

T = TypeVar("T")
# Turns a whole answer's data (and the worker headers) into the client's response; raises a
# PendraError when the worker's answer does not fit.
Shape = Callable[[dict[str, Any], dict[str, str]], Response]

# Longest silence between two frames of a streaming answer before the client gets a 504 error
# event (a live worker that stopped producing; a dead one is caught sooner by the heartbeat).
STREAM_IDLE_TIMEOUT_S = 300.0
# OpenAI's last event of a stream that ended well.
DONE_EVENT = sse.message("[DONE]")


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

    def __init__(self, router: Router, usage: UsageWriter) -> None:
        self.router = router
        self.usage = usage

    async def respond(self, request: Request, kind: str, body: dict[str, Any],
                      key_id: str | None, *, shape: Shape | None = None) -> Response:
        stream = kind == "chat" and bool(body.get("stream"))
        meter = UsageMeter(request_id=getattr(request.state, "request_id", ""), kind=kind,
                           model_requested=str(body.get("model", "")), key_id=key_id,
                           stream=stream)
        try:
            opened = await unless_client_leaves(request.receive,
                                                self.router.open(kind, meter.model_requested, body))
        except ClientGone:
            meter.failed(CLIENT_CLOSED, "client closed the connection while waiting for a worker")
            self.usage.submit(meter.record())
            return Response(status_code=CLIENT_CLOSED)
        except PendraError as exc:
            meter.failed(exc.status, exc.message)
            if worker_id := getattr(exc, "worker_id", ""):
                meter.worker(worker_id, getattr(exc, "worker_name", ""))
            self.usage.submit(meter.record())
            raise
        meter.model_served = opened.served
        meter.worker(opened.worker.id, opened.worker.name)
        if stream:
            return EventStream(opened, meter, self.usage)
        return await self._whole(request, opened, meter, shape)

    async def _whole(self, request: Request, opened: Opened, meter: UsageMeter,
                     shape: Shape | None = None) -> Response:
        try:
            data = await unless_client_leaves(request.receive, collect(opened, meter))
            headers = worker_headers(opened.worker.id, opened.worker.name)
            if shape is not None:
                return shape(data, headers)
            return JSONBytesResponse(data, headers=headers)
        except ClientGone:
            meter.failed(CLIENT_CLOSED, "client closed the connection before the answer")
            return Response(status_code=CLIENT_CLOSED)
        except PendraError as exc:
            meter.failed(exc.status, exc.message)
            raise
        finally:
            await asyncio.shield(_finish(opened, meter, self.usage))


async def _finish(opened: Opened, meter: UsageMeter, usage: UsageWriter) -> None:
    try:
        await opened.handle.aclose()  # sends Cancel to the worker if the request had not ended
    finally:
        usage.submit(meter.record())


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
    """The SSE answer of a streaming chat; owns the request until the stream ends either way."""

    media_type = sse.MEDIA_TYPE

    def __init__(self, opened: Opened, meter: UsageMeter, usage: UsageWriter) -> None:
        self.opened = opened
        self.meter = meter
        self.usage = usage
        self.status_code = 200
        self.background = None
        self.init_headers(worker_headers(opened.worker.id, opened.worker.name) | sse.HEADERS)
        self.finished = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await unless_client_leaves(receive, self._pump(send))
        except ClientGone:
            self.meter.failed(CLIENT_CLOSED, "client closed the connection mid-stream")
        finally:
            await asyncio.shield(_finish(self.opened, self.meter, self.usage))

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
        for frame in frames:
            if isinstance(frame, Chunk):
                parts.append(sse.event(frame.data))
            elif isinstance(frame, Chunks):
                parts.extend(sse.event(data) for data in frame.data)
            elif isinstance(frame, End):
                self.meter.tokens(frame.usage)
                parts.append(DONE_EVENT)
                return b"".join(parts), True
            elif isinstance(frame, Error):
                parts.append(self._error(error_from_frame(frame, self.opened.worker)))
                return b"".join(parts), True
        return b"".join(parts), False

    def _error(self, exc: PendraError) -> bytes:
        """The error event that ends a failed stream (never followed by [DONE])."""
        self.meter.failed(exc.status, exc.message)
        log.warning("stream %s ended with an error: %s", self.meter.request_id, exc.message)
        return sse.event(error_body(exc.message, exc.kind, param=exc.param, code=exc.code))

    @staticmethod
    async def _body(send: Send, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

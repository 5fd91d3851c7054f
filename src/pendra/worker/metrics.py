"""The worker's own Prometheus metrics, on an optional local port (``metrics_port``, off by default).

Rules:
- Off unless ``metrics_port`` (``METRICS_PORT``, ``pendra worker --metrics-port``) is set; it
  listens on ``metrics_host``, 127.0.0.1 unless configured, because it is unauthenticated: the
  host's own Prometheus (or node agent) reads it, nobody else. The port is bound before the worker
  dials, so a taken port stops start-up with one ``CannotListen`` line instead of a worker that
  silently exports nothing. Only ``GET /metrics`` answers (any other path is 404, another
  method 405), one request per connection, on asyncio's own streams: a worker loads no web
  framework.
- One ``WorkerMetrics`` per worker, with its own registry (several workers may share a process:
  ``pendra up``, tests).
- Per request the runner reports two things: as it is answered (the runner's ``_finish``, or
  the 503 of a backend that went down under it) how long it took, by backend, kind and status;
  and, for a chat, when its backend's first chunk came. A request the control plane cancelled is
  not reported. Backend up/down, in-flight, capacity and whether the control plane is connected
  are read from the live objects at scrape time by one custom collector.
- Labels are bounded: backend kind and endpoint (from discovery), request kind, HTTP status.
  No model names, request ids or client text.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pendra.errors import CannotListen
from pendra.protocol.inventory import BackendStatus

log = logging.getLogger(__name__)

# The classic text format every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A backend's whole answer: an embedding in milliseconds, a long generation in minutes.
DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
                      600.0)
# A backend's first chunk: tens of milliseconds with the model loaded, seconds to load it.
FIRST_CHUNK_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
# What a scraper gets to send its request line and headers: Prometheus sends a few hundred bytes
# at once; anything slower or larger is not a scraper.
HEADER_TIMEOUT_S = 5.0
HEADER_BYTES = 8192


class BackendSource(Protocol):
    def statuses(self) -> list[BackendStatus]: ...


class RunnerSource(Protocol):
    @property
    def in_flight(self) -> int: ...

    @property
    def max_concurrent(self) -> int: ...


class LinkSource(Protocol):
    @property
    def connected(self) -> bool: ...


class _LiveCollector(Collector):
    def __init__(self, backends: BackendSource) -> None:
        self.backends = backends
        self.runner: RunnerSource | None = None
        self.link: LinkSource | None = None

    def collect(self) -> Iterable[Metric]:
        return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("pendra_worker_backend_up", "Whether each discovered backend "
                               "answers and is verified (1) or not (0).",
                               labels=["backend", "endpoint"])
        for status in self.backends.statuses():
            up.add_metric([status.kind, status.endpoint], 1 if status.verified else 0)
        yield up
        if self.runner is not None:
            yield GaugeMetricFamily("pendra_worker_requests_in_flight",
                                    "Requests running on this worker now.",
                                    value=self.runner.in_flight)
            yield GaugeMetricFamily("pendra_worker_max_concurrent",
                                    "Requests this worker runs at once (max_concurrent).",
                                    value=self.runner.max_concurrent)
        if self.link is not None:
            yield GaugeMetricFamily("pendra_worker_control_plane_connected",
                                    "Whether the worker is connected to the control plane.",
                                    value=1 if self.link.connected else 0)


class WorkerMetrics:
    """One worker's registry, its per-request instruments and its scrape-time reader."""

    def __init__(self, backends: BackendSource) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pendra_worker_requests", "Requests this worker's backends "
                                "answered, by backend, kind and status.",
                                ["backend", "kind", "status"], registry=self.registry)
        self.duration = Histogram("pendra_worker_backend_duration_seconds", "Time a backend took "
                                  "to answer a request whole, by backend and kind.",
                                  ["backend", "kind"], buckets=DURATION_BUCKETS_S,
                                  registry=self.registry)
        self.first_chunk = Histogram("pendra_worker_backend_first_chunk_seconds", "Time from a "
                                     "chat request's start to its backend's first chunk.",
                                     ["backend"], buckets=FIRST_CHUNK_BUCKETS_S,
                                     registry=self.registry)
        self._live = _LiveCollector(backends)
        self.registry.register(self._live)
        # Each label set's series, looked up once (``labels()`` locks and validates every call).
        self._counts: dict[tuple[str, str, str], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._firsts: dict[str, Histogram] = {}

    def attach(self, runner: RunnerSource, link: LinkSource) -> None:
        self._live.runner, self._live.link = runner, link

    def request_done(self, backend: str, kind: str, status: int, seconds: float) -> None:
        key = (backend, kind, str(status))
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.requests.labels(*key)
        count.inc()
        if status < 400:
            duration = self._durations.get((backend, kind))
            if duration is None:
                duration = self._durations[(backend, kind)] = self.duration.labels(backend, kind)
            duration.observe(seconds)

    def first_chunk_after(self, backend: str, seconds: float) -> None:
        first = self._firsts.get(backend)
        if first is None:
            first = self._firsts[backend] = self.first_chunk.labels(backend)
        first.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Refused(Exception):
    """A request this endpoint does not serve: the status and the text to answer with."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large"}
_TEXT = "text/plain; charset=utf-8"


class MetricsEndpoint:
    """The worker's metrics port: a minimal HTTP/1.1 server for ``GET /metrics`` and nothing
    else, one request per connection. Built on asyncio streams so a worker loads no web framework
    (tests/worker/test_imports.py); a client gets ``HEADER_TIMEOUT_S`` and ``HEADER_BYTES`` to
    send its request line and headers."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(HEADER_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
                method, path = _request_line(head)
                if path.split("?", 1)[0] != "/metrics":
                    raise _Refused(404, "not found: the worker serves GET /metrics only\n")
                if method not in ("GET", "HEAD"):
                    raise _Refused(405, "only GET /metrics\n")
                await _respond(writer, 200, self.metrics.render(), CONTENT_TYPE,
                               head_only=method == "HEAD")
            except _Refused as refused:
                await _respond(writer, refused.status, refused.text.encode(), _TEXT)
            except TimeoutError:
                await _respond(writer, 408, b"request headers took too long\n", _TEXT)
            except (asyncio.LimitOverrunError, ValueError):
                await _respond(writer, 431, b"request headers too large\n", _TEXT)
            except asyncio.IncompleteReadError:
                pass  # the client went away before finishing its request
        except OSError:
            pass  # the client went away while we answered
        finally:
            writer.close()


def _request_line(head: bytes) -> tuple[str, str]:
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refused(400, "not an HTTP/1.x request\n")
    return parts[0], parts[1]


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, *,
                   head_only: bool = False) -> None:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    writer.write(head if head_only else head + body)
    await writer.drain()


def bind_metrics(host: str, port: int) -> socket.socket:
    """The metrics port's listening socket; CannotListen naming it when that fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise CannotListen(f"cannot listen for worker metrics on {where}: "
                           f"{(exc.strerror or str(exc)).lower()} (metrics_port)") from exc
    return sock


@asynccontextmanager
async def serving_metrics(metrics: WorkerMetrics, sock: socket.socket) -> AsyncIterator[str]:
    """Serve ``metrics`` on ``sock`` until the block exits (the socket is closed then, either
    way); yields the URL of /metrics."""
    endpoint = MetricsEndpoint(metrics)
    try:
        server = await asyncio.start_server(endpoint.handle, sock=sock, limit=HEADER_BYTES)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
    try:
        log.info("worker metrics at %s", url)
        yield url
    finally:
        server.close()  # connections still open end by themselves: one answer, or the timeout
        await server.wait_closed()

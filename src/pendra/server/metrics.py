"""The control plane's Prometheus metrics: what ``GET /metrics`` serves, and who may read it.

Rules:
- One ``ServerMetrics`` per app, with its own ``CollectorRegistry`` (never prometheus_client's
  global one), so a process may run several apps (``pendra up``, tests) without collisions.
- The request path pays for one thing only: ``request_ended(record)``, called with each request's
  usage record as it is queued (server/usage.py's ``UsageWriter.submit``, the one place every
  relayed request ends). It moves the request counter, the latency and time-to-first-token
  histograms and the token counters. The router reports each wait for a worker
  (``queue_waited``). Nothing else is updated per event.
- Everything that is a state rather than an event — workers connected, each worker's in-flight and
  capacity, requests waiting for a slot, the usage writer's backlog — and the plain counters the
  services already keep (retries and no-capacity refusals in the router, installs by outcome,
  /ws/gpu frames and bytes, usage records dropped) are read when Prometheus scrapes, by one custom
  collector over the live services (``attach``); nothing is copied on every change.
- Label values are bounded by what the fleet serves: ``kind`` (the usage kind), ``model`` (the
  served model id, empty when no worker was chosen — a client's unknown model name never becomes
  a label), ``worker``/``worker_name`` (enrolled workers), ``status`` (the HTTP status). Request
  ids, key ids and client text never become labels.
- Who may read them is the route's rule (server/api/metrics.py).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from pendra.server.store.usage import ERROR_STATUS, UsageRecord

# The classic text format every Prometheus version reads (our names need none of 1.0.0's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Whole requests: an embedding in milliseconds, a long generation or an image in minutes.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
                     600.0)
# First token: a loaded model answers in tens of milliseconds, a cold load takes seconds to minutes.
FIRST_TOKEN_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
# Waiting for a free slot: usually nothing; at most the queue timeout (10 s by default).
QUEUE_WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerLoad(Protocol):
    """One connected worker as the collector reads it (server/hub.py's ``WorkerView``)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def max_concurrent(self) -> int: ...


class FleetSource(Protocol):
    """What the collector reads of the hub (server/hub.py's ``Hub``)."""

    def connected(self) -> Sequence[WorkerLoad]: ...


class RoutingSource(Protocol):
    """What the collector reads of the router (server/routing.py's ``Router``)."""

    @property
    def waiting(self) -> int: ...

    retries: Tally[str]
    refused_busy: Tally[str]


class UsageSource(Protocol):
    """What the collector reads of the usage writer (server/usage.py's ``UsageWriter``)."""

    @property
    def backlog(self) -> int: ...

    dropped: int
    rejected: int


class InstallSource(Protocol):
    outcomes: Tally[str]


class TrafficSource(Protocol):
    """/ws/gpu traffic counted by the socket loops (server/gpu_socket.py's ``SocketTraffic``)."""

    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int


@dataclass
class Sources:
    hub: FleetSource
    router: RoutingSource
    usage: UsageSource
    installs: InstallSource
    traffic: TrafficSource


class _LiveCollector(Collector):
    """Reads the live services at scrape time (see the module rules)."""

    def __init__(self) -> None:
        self.sources: Sources | None = None

    def collect(self) -> Iterable[Metric]:
        src = self.sources
        if src is None:  # not serving yet (before the lifespan) or any more
            return []
        return list(self._collect(src))

    @staticmethod
    def _collect(src: Sources) -> Iterator[Metric]:
        workers = src.hub.connected()
        yield GaugeMetricFamily("pendra_workers_connected", "Workers connected on /ws/gpu now.",
                                value=len(workers))
        in_flight = GaugeMetricFamily("pendra_worker_in_flight",
                                      "Requests running on each connected worker.",
                                      labels=["worker", "worker_name"])
        capacity = GaugeMetricFamily("pendra_worker_capacity",
                                     "Requests each connected worker may run at once "
                                     "(its max_concurrent).", labels=["worker", "worker_name"])
        for w in workers:
            in_flight.add_metric([w.id, w.name], w.in_flight)
            capacity.add_metric([w.id, w.name], w.max_concurrent)
        yield in_flight
        yield capacity
        yield GaugeMetricFamily("pendra_queue_depth",
                                "Requests waiting for a free worker slot now.",
                                value=src.router.waiting)
        yield _tally("pendra_retries", "Requests tried again on another worker after the first "
                     "failed before answering, by served model.", "model", src.router.retries)
        yield _tally("pendra_no_capacity", "Requests answered 503 because every worker serving "
                     "the model stayed busy (or too many were waiting), by served model.",
                     "model", src.router.refused_busy)
        yield _tally("pendra_installs", "Model installs that ended, by outcome.", "outcome",
                     src.installs.outcomes)
        yield GaugeMetricFamily("pendra_usage_backlog_records",
                                "Usage records queued or in hand, not yet stored.",
                                value=src.usage.backlog)
        yield CounterMetricFamily("pendra_usage_dropped_records",
                                  "Usage records never stored: the queue was full.",
                                  value=src.usage.dropped)
        yield CounterMetricFamily("pendra_usage_rejected_records",
                                  "Usage records the store refused for good.",
                                  value=src.usage.rejected)
        frames = CounterMetricFamily("pendra_ws_frames", "WebSocket frames on /ws/gpu.",
                                     labels=["direction"])
        frames.add_metric(["in"], src.traffic.frames_in)
        frames.add_metric(["out"], src.traffic.frames_out)
        yield frames
        size = CounterMetricFamily("pendra_ws_bytes",
                                   "Payload bytes of WebSocket frames on /ws/gpu.",
                                   labels=["direction"])
        size.add_metric(["in"], src.traffic.bytes_in)
        size.add_metric(["out"], src.traffic.bytes_out)
        yield size


def _tally(name: str, documentation: str, label: str, counts: Tally[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


@dataclass(frozen=True)
class _Series:
    """The per-(kind, model) series one request moves."""

    latency: Histogram
    first_token: Histogram
    prompt_tokens: Counter
    completion_tokens: Counter


class ServerMetrics:
    """One app's metrics: its registry, the per-request instruments and the scrape-time reader."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "pendra_requests", "Relayed API requests that ended, by kind, served model, worker "
            "and HTTP status.", ["kind", "model", "worker", "worker_name", "status"],
            registry=self.registry)
        self.latency = Histogram(
            "pendra_request_duration_seconds", "Time from a request's arrival to the end of its "
            "answer, for requests that succeeded (status below 400).", ["kind", "model"],
            buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.first_token = Histogram(
            "pendra_time_to_first_token_seconds", "Time from a streamed request's arrival to the "
            "first frame of its answer from the worker.", ["kind", "model"],
            buckets=FIRST_TOKEN_BUCKETS_S, registry=self.registry)
        self.prompt_tokens = Counter(
            "pendra_prompt_tokens", "Tokens in: prompt tokens the backends reported.",
            ["kind", "model"], registry=self.registry)
        self.completion_tokens = Counter(
            "pendra_completion_tokens", "Tokens out: completion tokens the backends reported.",
            ["kind", "model"], registry=self.registry)
        self.queue_wait = Histogram(
            "pendra_queue_wait_seconds", "Time a request waited for a free worker slot (0 when "
            "one was free), by served model.", ["model"], buckets=QUEUE_WAIT_BUCKETS_S,
            registry=self.registry)
        self._live = _LiveCollector()
        self.registry.register(self._live)
        # Each label set's series, looked up once: prometheus_client's ``labels()`` takes a lock
        # and validates every time (~4 us), the dict lookup does not. Bounded like the labels.
        self._counts: dict[tuple[str, ...], Counter] = {}
        self._series: dict[tuple[str, str], _Series] = {}
        self._waits: dict[str, Histogram] = {}

    def attach(self, sources: Sources | None) -> None:
        """Point the scrape-time collector at the running services (None when they stop)."""
        self._live.sources = sources

    def request_ended(self, record: UsageRecord) -> None:
        """Count one finished request (called as its usage record is queued)."""
        model = record.model_served or ""
        key = (record.kind, model, record.worker_id or "", record.worker_name or "",
               str(record.status))
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.requests.labels(*key)
        count.inc()
        series = self._series.get((record.kind, model))
        if series is None:
            series = self._series[(record.kind, model)] = _Series(
                self.latency.labels(record.kind, model), self.first_token.labels(record.kind, model),
                self.prompt_tokens.labels(record.kind, model),
                self.completion_tokens.labels(record.kind, model))
        if record.status < ERROR_STATUS:
            series.latency.observe(record.latency_ms / 1000)
        if record.first_token_ms is not None:
            series.first_token.observe(record.first_token_ms / 1000)
        if record.prompt_tokens > 0:
            series.prompt_tokens.inc(record.prompt_tokens)
        if record.completion_tokens > 0:
            series.completion_tokens.inc(record.completion_tokens)

    def queue_waited(self, model: str, seconds: float) -> None:
        wait = self._waits.get(model)
        if wait is None:
            wait = self._waits[model] = self.queue_wait.labels(model)
        wait.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""``pendra worker``: discovery, the control-plane connection and the runner, in one TaskGroup.

Start-up runs one discovery pass before dialling, so the first inventory the server sees is real,
and logs who this worker is, where it dials and what it found. Then the connection (reconnecting
forever) and the discovery loop (re-sending the inventory when it changes) run side by side; each
request runs inside the runner's own group, which outlives both.

Shutdown starts when ``stop`` is set (signals are the caller's business) and has an order:
1. stop taking work: the runner refuses new requests with 503 and the server is sent an inventory
   with no models, so it routes elsewhere;
2. drain: running requests get up to ``DRAIN_S`` to finish over the still-open socket;
3. cancel whatever is left (requests and installs), and let the frames they queued be written
   (at most ``FLUSH_S``);
4. close the socket, then release the backends.
With ``metrics_port`` set, the worker's /metrics (worker/metrics.py) is bound before anything else
(a taken port stops start-up) and served until the worker has stopped.
A refused key or an unsupported protocol version ends ``run_worker`` with that error
(``AuthenticationFailed`` / ``ProtocolError``); every other failure to connect is retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack

from pendra import __version__, heap
from pendra.backends.registry import BackendRegistry
from pendra.config import WorkerSettings
from pendra.errors import PendraError
from pendra.protocol.frames import Frame, Inventory
from pendra.protocol.inventory import MAX_MODELS, cap_models
from pendra.worker.connection import Connection
from pendra.worker.local import no_ollama_message
from pendra.worker.metrics import WorkerMetrics, bind_metrics, serving_metrics
from pendra.worker.runner import Runner

log = logging.getLogger(__name__)

# How long running requests may take to finish once the worker is asked to stop.
DRAIN_S = 5.0
# How long the last frames (ends, errors) may take to reach the socket before it is closed.
FLUSH_S = 1.0


def build_inventory(registry: BackendRegistry, settings: WorkerSettings, *,
                    serving: bool = True) -> Inventory:
    """The inventory frame: every backend's status, the models offered (none when not serving;
    at most the protocol's ``MAX_MODELS``, the rest left out with a warning)."""
    models = registry.models() if serving else []
    if len(models) > MAX_MODELS:
        log.warning("this host serves %d models; offering the first %d (the protocol's limit)",
                    len(models), MAX_MODELS)
    return Inventory(backends=registry.statuses(), models=cap_models(models),
                     max_concurrent=settings.max_concurrent)


def log_start(registry: BackendRegistry, settings: WorkerSettings) -> None:
    log.info("worker %s (%s) starting; control plane %s", settings.worker_name,
             settings.worker_id, settings.gpu_ws_url)
    statuses = registry.statuses()
    for status in statuses:
        if status.verified:
            log.info("backend %s %s at %s", status.kind, status.version, status.endpoint)
    if not any(status.verified for status in statuses):
        # Nothing to serve yet: point at the recommended backend unless it is turned off.
        if "ollama" in settings.backends_disabled:
            log.warning("no backend verified on this host (tried: %s); see `pendra backends`",
                        ", ".join(s.kind for s in statuses if s.tried))
        else:
            log.warning("%s", no_ollama_message(statuses))
    models = registry.models()
    log.info("serving %d model(s)%s, at most %d request(s) at once", len(models),
             f": {', '.join(m.id for m in models)}" if models else "", settings.max_concurrent)


async def run_worker(settings: WorkerSettings, *, stop: asyncio.Event | None = None,
                     probe_urls: Sequence[str] | None = None,
                     registry: BackendRegistry | None = None) -> None:
    """Serve this host's backends to the control plane until ``stop`` is set.

    A ``registry`` passed in stays the caller's to close; one built here is closed here.
    """
    stop = stop or asyncio.Event()
    sock = bind_metrics(settings.metrics_host, settings.metrics_port) \
        if settings.metrics_port else None
    owned = registry is None
    registry = registry or BackendRegistry(settings, probe_urls=probe_urls)
    try:
        metrics = WorkerMetrics(registry) if sock is not None else None
        async with AsyncExitStack() as stack:
            if sock is not None and metrics is not None:
                await stack.enter_async_context(serving_metrics(metrics, sock))
                sock = None  # serving_metrics closes it
            await registry.refresh()
            log_start(registry, settings)
            heap.settle()  # after the first discovery: what a worker keeps for good exists now
            try:
                await _serve(settings, registry, stop, metrics)
            except* PendraError as errors:
                raise _first(errors)  # e.g. the key was refused: one clear error, not a group
        log.info("worker %s stopped", settings.worker_name)
    finally:
        if sock is not None:
            sock.close()
        if owned:
            await registry.aclose()


async def _serve(settings: WorkerSettings, registry: BackendRegistry, stop: asyncio.Event,
                 metrics: WorkerMetrics | None = None) -> None:
    connection: Connection  # the runner and the connection refer to each other

    async def send(frame: Frame) -> bool:
        return await connection.send(frame)

    async def inventory_changed() -> None:
        await connection.inventory_changed()

    runner = Runner(registry, send, max_concurrent=settings.max_concurrent,
                    on_models_changed=inventory_changed, metrics=metrics)
    connection = Connection(
        settings, runner, lambda: build_inventory(registry, settings, serving=runner.accepting),
        software_version=__version__)
    if metrics is not None:
        metrics.attach(runner, connection)
    async with runner, asyncio.TaskGroup() as group:
        dial = group.create_task(connection.run(), name="worker-connection")
        group.create_task(registry.run(stop, inventory_changed), name="worker-discovery")
        await stop.wait()
        log.info("worker %s stopping: taking no new work", settings.worker_name)
        runner.stop_accepting()
        await connection.inventory_changed()
        await runner.drain(DRAIN_S)
        await connection.flush(FLUSH_S)  # the last ends and errors are queued, not yet written
        dial.cancel()  # closes the socket; the discovery loop ends on `stop` by itself


def _first(errors: BaseExceptionGroup[PendraError]) -> PendraError:
    first: BaseException = errors
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, PendraError)
    return first

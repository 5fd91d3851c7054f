"""The control plane's app factory.

Rules:
- ``create_app(settings)`` builds a new app each call; nothing lives in module globals, so a
  process (``pendra up``, a test) may run several. What exists for the app's whole life is made by
  the lifespan and kept on ``app.state``: ``settings``, ``catalogue``, ``sessions`` (the session
  signer, whose secret file is read on first use), ``sign_in_throttle`` and ``metrics`` (its own
  Prometheus registry, server/metrics.py) (at once), then
  ``store``, ``hub``, ``router``, ``usage``, ``last_used``, ``last_seen``, ``keys`` (the in-memory
  key index) and ``installs`` while it runs. Only this module and deps.py touch ``app.state``;
  routes get what they need through deps.py.
- Start-up order: open (and migrate) the store, make the hub, start the usage writer, the
  last-used and last-seen writers, the key index (read whole from the store before anything is
  served) and the installs service. Shutdown runs it backwards: the hub closes first (workers are
  told to go away, their open requests end with WorkerGone and are metered, their last-seen stamps
  noted), then installs, the last-seen and last-used stamps and the usage writer drain into the
  store, then the store closes. A hub passed in by the caller is the caller's to close.
- ``/metrics`` (api/metrics.py) reads the running services through ``metrics.attach``, set once
  they exist and cleared before they stop; every request's usage record reaches the metrics as it
  is queued, and /ws/gpu frames are counted in the app's ``SocketTraffic``.
- ``/ws/gpu`` is the workers' socket: the enrolled public key and name come from the store; the
  workers' ``last_seen_at`` is written in batches by ``LastSeen`` (last_seen.py: every few seconds
  from the hub's views, and as each connection ends), never from a socket loop, and a failure to
  write it is logged, never fatal to a worker's connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, WebSocket

from pendra import __version__
from pendra.catalogue.loader import load_catalogue
from pendra.config import ServerSettings
from pendra.server.api import mount_api
from pendra.server.errors import install_error_handlers
from pendra.server.api import metrics as metrics_api
from pendra.server.gpu_socket import Enrolled, SocketTraffic, StrangerBudget, serve_gpu_socket
from pendra.server.hub import Hub
from pendra.server.installs import Installs
from pendra.server.key_index import KeyIndex
from pendra.server.limits import Limiter, month_start, parse_limits
from pendra.server.last_seen import LastSeen
from pendra.server.last_used import LastUsed
from pendra.server.metrics import ServerMetrics, Sources
from pendra.server.middleware import BodyLimitMiddleware, RequestIdMiddleware
from pendra.server.routing import Router
from pendra.server.sessions import SECRET_FILE, Sessions
from pendra.server.store import usage as usage_store
from pendra.server.store import workers as worker_store
from pendra.server.store.db import Store
from pendra.server.throttle import SignInThrottle
from pendra.server.usage import UsageWriter

log = logging.getLogger(__name__)

DESCRIPTION = ("An OpenAI-compatible API in front of your own fleet of Ollama hosts. Send your "
               "API key as `Authorization: Bearer pdr_sk_…` (or `x-api-key`). The same routes "
               "answer under `/v1` for SDKs configured with that base URL.")


async def start_limiter(store: Store, keys: KeyIndex, settings: ServerSettings) -> Limiter:
    """The per-key limiter, its counters seeded from the usage records (server/limits.py)."""
    limiter = Limiter(parse_limits(settings.key_defaults))
    now = datetime.now(UTC)
    async with store.session() as session:
        month = await usage_store.key_usage_since(session, month_start(now))
        minute = await usage_store.key_usage_since(session, now - timedelta(minutes=1))
    limiter.seed(month_tokens={key: tokens for key, (_, tokens) in month.items()},
                 last_minute=minute,
                 limits_of=lambda key_id: row.limits if (row := keys.get(key_id)) else None)
    return limiter


def create_app(settings: ServerSettings, *, hub: Hub | None = None,
               console: bool = True) -> FastAPI:
    """A control-plane app for ``settings``; ``hub`` to share one made elsewhere (tests, ``up``);
    ``console=False`` for the API alone."""
    catalogue = load_catalogue()
    metrics = ServerMetrics()
    traffic = SocketTraffic()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await Store.open(settings.database_url)
        try:
            fleet = hub or Hub(heartbeat_interval_s=settings.heartbeat_interval_s,
                               heartbeat_timeout_s=settings.heartbeat_timeout_s)
            async with (UsageWriter(store, observe=metrics.request_ended) as usage,
                        LastUsed(store) as last_used,
                        LastSeen(store, fleet, interval_s=fleet.heartbeat_interval_s) as last_seen,
                        KeyIndex(store) as keys, Installs(store, fleet, catalogue) as installs):
                app.state.store, app.state.hub = store, fleet
                app.state.usage, app.state.installs = usage, installs
                app.state.last_used, app.state.last_seen = last_used, last_seen
                app.state.keys = keys
                app.state.limiter = await start_limiter(store, keys, settings)
                app.state.router = Router(fleet, catalogue,
                                          queue_timeout_s=settings.queue_timeout_s,
                                          on_wait=metrics.queue_waited)
                metrics.attach(Sources(hub=fleet, router=app.state.router, usage=usage,
                                       installs=installs, traffic=traffic))
                try:
                    yield
                finally:
                    metrics.attach(None)
                    if hub is None:
                        await fleet.close()
        finally:
            await store.close()

    app = FastAPI(title="Pendra", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url="/api/v1/docs", redoc_url="/api/v1/redoc",
                  openapi_url="/api/v1/openapi.json")
    app.state.settings = settings
    app.state.catalogue = catalogue
    app.state.metrics = metrics
    app.state.sessions = Sessions(settings.home.root / SECRET_FILE)
    app.state.sign_in_throttle = SignInThrottle(
        per_address_per_minute=settings.sign_in_per_address_per_minute,
        global_per_second=settings.sign_in_per_second, now=time.monotonic())
    install_error_handlers(app)

    async def enrolled(worker_id: str) -> Enrolled | None:
        async with app.state.store.session() as session:
            row = await worker_store.get_worker(session, worker_id)
            return Enrolled(row.public_key, row.name) if row is not None else None

    def seen(worker_id: str, when: datetime) -> None:
        app.state.last_seen.note(worker_id, when)

    strangers = StrangerBudget()

    # First in the routing table: a flood of strangers on /ws/gpu should not also pay for matching
    # every API route before reaching its refusal.
    @app.websocket("/ws/gpu")
    async def gpu_socket(websocket: WebSocket) -> None:
        await serve_gpu_socket(websocket, app.state.hub, enrolled, strangers, seen, traffic)

    mount_api(app)
    app.include_router(metrics_api.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if console:
        from pendra.server.console import install_console  # the pages need Jinja; the API doesn't

        install_console(app)
    # Added last = outermost: every response, the body limit's 413 included, gets a request id.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app

"""Every route's dependencies, as named ``Annotated`` aliases over what the app keeps on app.state.

Rules: this module and the app factory (app.py) are the only ones that touch ``app.state``.
Routes — the API's, the console's, the admin API's, and the authentication dependencies they
use — declare what they need (``store: StoreDep``, ``installs: InstallsDep``) and never reach into
``request.app`` themselves, so every app built by ``create_app`` serves from its own state and
every service can be called without HTTP. tests/server/test_layering.py checks this.

Every getter is ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in a
worker thread, and a thread hop per dependency per request cost ~1 ms of CPU for six of them
(measured in-process); an ``async def`` one is a plain call on the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pendra.catalogue.loader import Catalogue
from pendra.config import ServerSettings
from pendra.server.hub import Hub
from pendra.server.installs import Installs
from pendra.server.key_index import KeyIndex
from pendra.server.last_used import LastUsed
from pendra.server.limits import Limiter
from pendra.server.metrics import ServerMetrics
from pendra.server.relay import Relay
from pendra.server.routing import Router
from pendra.server.sessions import COOKIE_NAME, Session, Sessions, current_session
from pendra.server.store.db import Store
from pendra.server.throttle import SignInThrottle
from pendra.server.usage import UsageWriter


async def get_settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def get_router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


async def get_catalogue(request: Request) -> Catalogue:
    catalogue: Catalogue = request.app.state.catalogue
    return catalogue


async def get_usage(request: Request) -> UsageWriter:
    usage: UsageWriter = request.app.state.usage
    return usage


async def get_installs(request: Request) -> Installs:
    installs: Installs = request.app.state.installs
    return installs


async def get_last_used(request: Request) -> LastUsed:
    last_used: LastUsed = request.app.state.last_used
    return last_used


async def get_key_index(request: Request) -> KeyIndex:
    keys: KeyIndex = request.app.state.keys
    return keys


async def get_sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


async def get_sign_in_throttle(request: Request) -> SignInThrottle:
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    return throttle


async def get_limiter(request: Request) -> Limiter:
    limiter: Limiter = request.app.state.limiter
    return limiter


async def get_metrics(request: Request) -> ServerMetrics:
    metrics: ServerMetrics = request.app.state.metrics
    return metrics


async def get_relay(router: Annotated[Router, Depends(get_router)],
                    usage: Annotated[UsageWriter, Depends(get_usage)],
                    keys: Annotated[KeyIndex, Depends(get_key_index)],
                    limiter: Annotated[Limiter, Depends(get_limiter)]) -> Relay:
    return Relay(router, usage, keys, limiter)


async def get_current_session(request: Request,
                              sessions: Annotated[Sessions, Depends(get_sessions)],
                              store: Annotated[Store, Depends(get_store)]) -> Session | None:
    """The request's valid admin session, or None (computed once per request)."""
    return await current_session(sessions, store, request.cookies.get(COOKIE_NAME))


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
HubDep = Annotated[Hub, Depends(get_hub)]
RouterDep = Annotated[Router, Depends(get_router)]
CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]
UsageDep = Annotated[UsageWriter, Depends(get_usage)]
RelayDep = Annotated[Relay, Depends(get_relay)]
InstallsDep = Annotated[Installs, Depends(get_installs)]
LastUsedDep = Annotated[LastUsed, Depends(get_last_used)]
KeyIndexDep = Annotated[KeyIndex, Depends(get_key_index)]
LimiterDep = Annotated[Limiter, Depends(get_limiter)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]
SignInThrottleDep = Annotated[SignInThrottle, Depends(get_sign_in_throttle)]
CurrentSession = Annotated[Session | None, Depends(get_current_session)]

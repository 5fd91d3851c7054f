"""The API's dependencies, as named ``Annotated`` aliases over what the lifespan put on app.state.

Routes declare what they need (``store: StoreDep``, ``relay: RelayDep``) and never reach into
``request.app.state`` themselves, so every app built by ``create_app`` serves from its own state.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pendra.catalogue.loader import Catalogue
from pendra.config import ServerSettings
from pendra.server.hub import Hub
from pendra.server.relay import Relay
from pendra.server.routing import Router
from pendra.server.store.db import Store
from pendra.server.usage import UsageWriter


def get_settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def get_router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


def get_catalogue(request: Request) -> Catalogue:
    catalogue: Catalogue = request.app.state.catalogue
    return catalogue


def get_usage(request: Request) -> UsageWriter:
    usage: UsageWriter = request.app.state.usage
    return usage


def get_relay(router: Annotated[Router, Depends(get_router)],
              usage: Annotated[UsageWriter, Depends(get_usage)]) -> Relay:
    return Relay(router, usage)


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
HubDep = Annotated[Hub, Depends(get_hub)]
RouterDep = Annotated[Router, Depends(get_router)]
CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]
UsageDep = Annotated[UsageWriter, Depends(get_usage)]
RelayDep = Annotated[Relay, Depends(get_relay)]

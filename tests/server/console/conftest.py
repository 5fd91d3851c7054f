"""A real control plane (``create_app`` under uvicorn on 127.0.0.1:0) with the console installed.

``console`` is the running server plus a second Store on its database, for seeding and for checking
what the console's forms changed; ``client`` is an httpx client with no session; ``admin`` is one
signed in as the admin, with the session's CSRF token at hand.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from store_targets import pg_schema, store, target  # noqa: F401  (test_usage_charts)
from suite_env import WAIT

from pendra import config as cfg
from pendra.config import ServerSettings
from pendra.home import Home
from pendra.server import state
from pendra.server.app import create_app
from pendra.server.console import install_console
from pendra.server.serve import bind, serving
from pendra.server.store import admin as admin_store
from pendra.server.store.db import Store

PASSWORD = "correct horse battery"
# Console requests are local and small; this only bounds a broken server.
HTTP_TIMEOUT_S = 10 * WAIT
CSRF_ATTRIBUTE = re.compile(r'data-csrf="([^"]+)"')


@dataclass
class Console:
    app: FastAPI
    base_url: str
    settings: ServerSettings
    store: Store


@dataclass
class SignedIn:
    http: httpx.AsyncClient
    csrf: str

    def form(self, **fields: str) -> dict[str, str]:
        """Form fields plus this session's CSRF token."""
        return {"csrf_token": self.csrf} | fields


def console_app(settings: ServerSettings) -> FastAPI:
    app = create_app(settings)
    if not any(getattr(route, "path", None) == "/sign-in" for route in app.routes):
        install_console(app)  # until create_app wires the console itself
    return app


@pytest.fixture
async def console(pendra_home: Path) -> AsyncIterator[Console]:
    home = Home(pendra_home)
    settings = replace(cfg.load_server(home, {}), host="127.0.0.1", port=0,
                       admin_token=state.new_admin_token())
    with bind(settings.host, 0) as sock:  # as the daemons do: the real port before the app
        settings = replace(settings, port=sock.getsockname()[1])
        app = console_app(settings)
        async with serving(app, settings.host, settings.port, sock=sock) as running:
            store = await Store.open(settings.database_url)
            try:
                async with store.session() as session:
                    await admin_store.set_admin_password(session, PASSWORD)
                    await session.commit()
                yield Console(app, running.base_url, settings, store)
            finally:
                await store.close()


@pytest.fixture
async def client(console: Console) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=console.base_url, timeout=HTTP_TIMEOUT_S,
                                 follow_redirects=False) as http:
        yield http


async def sign_in(http: httpx.AsyncClient, password: str = PASSWORD,
                  name: str = "admin") -> SignedIn:
    response = await http.post("/sign-in", data={"name": name, "password": password,
                                                 "next": "/models"})
    assert response.status_code == 303, response.text
    page = await http.get("/account")
    assert page.status_code == 200
    match = CSRF_ATTRIBUTE.search(page.text)
    assert match, "the page carries the session's CSRF token"
    return SignedIn(http, match.group(1))


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> SignedIn:
    return await sign_in(client)

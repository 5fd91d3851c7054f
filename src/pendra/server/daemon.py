"""``pendra server``: the control plane alone, serving until asked to stop.

Start-up order: bind the listening socket first (a taken port fails as one ``CannotListen`` line
before anything is created), then open and migrate the store, create the first-start secrets and
print them at once (server/first_start.py, shared with ``pendra up``), then serve.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import replace

from pendra import config as cfg, heap
from pendra.home import Home
from pendra.server import state
from pendra.server.app import create_app
from pendra.server.connections import EdgeLimits
from pendra.server.first_start import first_start
from pendra.server.serve import bind, serving
from pendra.server.store.db import Store


async def run_server(home: Home, *, host: str | None, port: int | None,
                     environ: Mapping[str, str] | None = None,
                     stop: asyncio.Event | None = None,
                     announce: Callable[[str], None] = print) -> None:
    env = os.environ if environ is None else environ
    settings = cfg.load_server(home, env)
    settings = replace(settings, host=host or settings.host,
                       port=settings.port if port is None else port,
                       admin_token=state.new_admin_token())
    stop = stop or asyncio.Event()
    with bind(settings.host, settings.port) as sock:
        home.ensure()
        await _first_start(settings, announce)
        limits = EdgeLimits.of(settings)
        async with serving(create_app(settings), settings.host, settings.port, sock=sock,
                           limits=limits) as running:
            state.write_server_state(home, running.base_url, settings.admin_token)
            announce(f"Pendra control plane listening on {running.base_url}")
            announce(f"  Workers connect to {running.ws_url}/ws/gpu  "
                     "(enrol one: pendra workers add --name NAME)")
            heap.settle()
            try:
                await stop.wait()
            finally:
                state.clear_server_state(home)


async def _first_start(settings: cfg.ServerSettings, announce: Callable[[str], None]) -> None:
    """Create the admin password and a first API key once, and print them the moment they exist."""
    store = await Store.open(settings.database_url)
    try:
        first = await first_start(store)
    finally:
        await store.close()
    if first is not None:
        first.announce(announce)

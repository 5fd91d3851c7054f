"""``pendra server``: the control plane alone, serving until asked to stop.

Start-up order: bind the listening socket first (a taken port fails as one ``CannotListen`` line
before anything is created), then open and migrate the store, create the first-start secrets and
print them at once (server/first_start.py, shared with ``pendra up``), then serve.

The public URL (server/public_url.py) is resolved once, after binding (so port 0 is the real
port), and printed with the rule that chose it; the app, the console and the CLI (through
server.yaml) all use that one.
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
from pendra.server.public_url import local_url, public_base, resolved
from pendra.server.serve import bind, serving
from pendra.server.store.db import Store


async def run_server(home: Home, *, host: str | None, port: int | None,
                     public_url: str | None = None, environ: Mapping[str, str] | None = None,
                     stop: asyncio.Event | None = None,
                     announce: Callable[[str], None] = print) -> None:
    env = os.environ if environ is None else environ
    settings = cfg.load_server(home, env)
    settings = replace(settings, host=host or settings.host,
                       port=settings.port if port is None else port,
                       public_url=settings.public_url if public_url is None else public_url,
                       admin_token=state.new_admin_token())
    stop = stop or asyncio.Event()
    with bind(settings.host, settings.port) as sock:
        settings = replace(settings, port=sock.getsockname()[1])
        public = public_base(settings)
        settings = resolved(settings, public)
        home.ensure()
        await _first_start(settings, announce)
        limits = EdgeLimits.of(settings)
        async with serving(create_app(settings), settings.host, settings.port, sock=sock,
                           limits=limits) as running:
            local = local_url(running.host, running.port)
            state.write_server_state(home, local, settings.admin_token, public.url)
            announce(f"Pendra control plane listening on {running.base_url}")
            announce(f"  Public URL: {public.url}  ({public.source})")
            announce(f"  Workers connect to {public.ws_url}/ws/gpu  "
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

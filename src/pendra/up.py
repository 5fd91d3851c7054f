"""``pendra up``: the control plane and one worker in one process, on the embedded SQLite store.

Rules: the worker is enrolled automatically (its private key is generated once and kept in
config.yaml, 0600; only the public key goes to the store, through server/enrolment.py's
``ensure_enrolled``); the first start creates the admin password and a first API key and prints
both once (server/first_start.py, shared with ``pendra server``); later starts print the URL and
how to make keys. Both halves run in one TaskGroup and stop together, in order: the worker first
(it stops taking work), then the server.

Start-up order: bind the listening socket before anything else (a taken port fails as one
``CannotListen`` line, and nothing is created under PENDRA_HOME), then open the store, enrol the
worker, create the first-start secrets and print them the moment they exist (a later failure cannot
hide them), then serve.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace

from pendra import config as cfg
from pendra.home import Home
from pendra.server import state
from pendra.server.app import create_app
from pendra.server.connections import EdgeLimits
from pendra.server.enrolment import ensure_enrolled, worker_ws_url
from pendra.server.first_start import first_start
from pendra.server.public_url import local_url, public_base, resolved
from pendra.server.serve import bind, serving
from pendra.server.store.db import Store
from pendra.worker.daemon import run_worker

log = logging.getLogger(__name__)


async def enrol_local_worker(home: Home, store: Store,
                             environ: Mapping[str, str]) -> cfg.WorkerSettings:
    """Make sure this host's worker has a key pair and is enrolled; returns its settings."""
    settings = cfg.load_worker(home, environ, require_key=False)
    async with store.session() as session:
        enrolled = await ensure_enrolled(session, settings.worker_id, settings.worker_name,
                                         settings.private_key or None)
        await session.commit()
    if enrolled.private_key != settings.private_key:  # a new key pair: keep its private half
        data = cfg.read_file(home)
        data["gpu_worker_private_key"] = enrolled.private_key
        cfg.write_file(home, data)
    return replace(settings, worker_name=enrolled.name, private_key=enrolled.private_key)


async def run_up(home: Home, *, host: str | None, port: int | None,
                 public_url: str | None = None, environ: Mapping[str, str] | None = None,
                 stop: asyncio.Event | None = None,
                 announce: Callable[[str], None] = print) -> None:
    env = dict(os.environ if environ is None else environ)
    server_settings = cfg.load_server(home, env)
    server_settings = replace(
        server_settings, host=host or server_settings.host,
        port=server_settings.port if port is None else port,
        public_url=server_settings.public_url if public_url is None else public_url)
    stop = stop or asyncio.Event()
    with bind(server_settings.host, server_settings.port) as sock:
        server_settings = replace(server_settings, port=sock.getsockname()[1])
        public = public_base(server_settings)
        server_settings = resolved(server_settings, public)
        home.ensure()
        store = await Store.open(server_settings.database_url)
        try:
            worker_settings = await enrol_local_worker(home, store, env)
            first = await first_start(store)
        finally:
            await store.close()
        if first is not None:
            first.announce(announce)

        server_settings = replace(server_settings, admin_token=state.new_admin_token())
        app = create_app(server_settings)
        limits = EdgeLimits.of(server_settings)
        async with serving(app, server_settings.host, server_settings.port, sock=sock,
                           limits=limits) as running:
            local = local_url(running.host, running.port)
            state.write_server_state(home, local, server_settings.admin_token, public.url)
            worker_settings = replace(worker_settings, server_ws_url=worker_ws_url(local))
            base = public.url
            announce(f"Pendra is running at {local}")
            if public.url != local:
                announce(f"  Public URL: {base}  ({public.source})")
            announce(f"  OpenAI-compatible API: {base}/api/v1  (also {base}/v1)")
            announce(f"  Console: {base}/   API docs: {base}/api/v1/docs")
            if first is None:
                announce("  Create an API key with: pendra keys create --name NAME")
            announce(f"  Local worker: {worker_settings.worker_name} ({worker_settings.worker_id})")
            async with asyncio.TaskGroup() as tg:
                worker_task = tg.create_task(run_worker(worker_settings, stop=stop), name="worker")
                await stop.wait()
                await worker_task
            state.clear_server_state(home)

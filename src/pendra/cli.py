"""The ``pendra`` command: a shell over the library.

Each command parses its arguments, loads settings, makes one call and returns an exit code. Only
Pendra's own errors are caught; they print as ``Kind: message`` and exit 1 (2 for configuration).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pendra import __version__, heap
from pendra import config as cfg
from pendra.errors import ConfigError, PendraError
from pendra.home import Home
from pendra.logs import LogFormat, configure

if TYPE_CHECKING:  # the HTTP client is imported by the commands that call a server: a
    import httpx  # worker (`pendra worker`) never does, and its memory is smaller without it

T = TypeVar("T")

app = typer.Typer(help="Pendra: your own Ollama fleet behind one OpenAI-compatible API.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Read and change $PENDRA_HOME/config.yaml.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (run on the control-plane host).", no_args_is_help=True)
workers_app = typer.Typer(help="Enrolled workers (run on the control-plane host).",
                          no_args_is_help=True)
models_app = typer.Typer(help="Models served by this host's backends.",
                         invoke_without_command=True)
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(workers_app, name="workers")
app.add_typer(models_app, name="models")
admin_app = typer.Typer(help="The console's admin account (run on the control-plane host).",
                        no_args_is_help=True)
app.add_typer(admin_app, name="admin")

out = Console()
err = Console(stderr=True)

HostOption = Annotated[str | None, typer.Option(help="Address to listen on (default: config `host`).")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on (default: config `port`).")]
LogFormatOption = Annotated[LogFormat, typer.Option(
    "--log-format", envvar="PENDRA_LOG_FORMAT", case_sensitive=False,
    help="text: Rich on a terminal, one plain line per record otherwise; json: one JSON object "
         "per line (time, level, logger, message, request_id, exception).")]
MetricsPortOption = Annotated[int | None, typer.Option(
    "--metrics-port", min=0, max=65535,
    help="Serve this worker's Prometheus /metrics on this port (default: config `metrics_port`; "
         "0 = off), on metrics_host (127.0.0.1 unless configured).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _home() -> Home:
    return Home.resolve()


def _setup_logging(log_format: LogFormat) -> None:
    configure(log_format)  # pendra/logs.py owns how logs look


def _daemon_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the daemons run on: uvloop where it is installed (uvicorn[standard] brings
    it; about a tenth more requests a second here), unless PENDRA_EVENT_LOOP=asyncio."""
    if os.environ.get("PENDRA_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(make: Callable[[], Awaitable[T]], *,
         loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> T:
    """Run one coroutine; Pendra errors become `Kind: message` and a non-zero exit."""
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(make())  # type: ignore[arg-type]
    except ConfigError as exc:
        _print_error("ConfigError", exc.message)
        raise typer.Exit(2) from exc
    except PendraError as exc:
        _print_error(type(exc).__name__, exc.message)
        raise typer.Exit(1) from exc


def _print_error(kind: str, message: str) -> None:
    # One line whatever the terminal's width, and the message is text, never Rich markup.
    err.print(f"[red]{kind}[/red]: {escape(message)}", soft_wrap=True)


async def _until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a daemon until SIGINT/SIGTERM sets its stop event."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _announce(line: str) -> None:
    out.print(line, highlight=False, markup=False, soft_wrap=True)


# --- daemons ----------------------------------------------------------------------------------------


@app.command()
def up(host: HostOption = None, port: PortOption = None,
       log_format: LogFormatOption = LogFormat.text) -> None:
    """Run the control plane and a local worker in one process (SQLite under $PENDRA_HOME)."""
    from pendra.up import run_up

    _setup_logging(log_format)
    heap.daemon_process()
    _run(lambda: _until_signalled(
        lambda stop: run_up(_home(), host=host, port=port, stop=stop, announce=_announce)),
        loop_factory=_daemon_loop())


@app.command()
def server(host: HostOption = None, port: PortOption = None,
           log_format: LogFormatOption = LogFormat.text) -> None:
    """Run the control plane alone (DATABASE_URL selects SQLite or PostgreSQL)."""
    from pendra.server.daemon import run_server

    _setup_logging(log_format)
    heap.daemon_process()
    _run(lambda: _until_signalled(
        lambda stop: run_server(_home(), host=host, port=port, stop=stop, announce=_announce)),
        loop_factory=_daemon_loop())


@app.command()
def worker(metrics_port: MetricsPortOption = None,
           log_format: LogFormatOption = LogFormat.text) -> None:
    """Run the worker daemon: discover local backends and serve them to the control plane."""
    from dataclasses import replace

    from pendra.worker.daemon import run_worker

    _setup_logging(log_format)
    heap.daemon_process()
    settings = _run_sync(lambda: cfg.load_worker(_home()))
    if metrics_port is not None:
        settings = replace(settings, metrics_port=metrics_port)
    _run(lambda: _until_signalled(lambda stop: run_worker(settings, stop=stop)),
         loop_factory=_daemon_loop())


def _run_sync(call: Callable[[], T]) -> T:
    try:
        return call()
    except ConfigError as exc:
        _print_error("ConfigError", exc.message)
        raise typer.Exit(2) from exc


@app.command()
def version() -> None:
    """Print Pendra's version."""
    _announce(__version__)


# --- config -----------------------------------------------------------------------------------------


# Keys whose values are never printed, by YAML and environment name.
_SECRET_KEYS = frozenset({"gpu_worker_private_key", "GPU_WORKER_PRIVATE_KEY", "metrics_token",
                          "PENDRA_METRICS_TOKEN"})


def _secret(key: str) -> bool:
    """Whether ``key`` holds a secret: the worker's private key, the metrics token."""
    return key in _SECRET_KEYS or key.lower() in _SECRET_KEYS


@config_app.command("set")
def config_set(key: str, value: str) -> None:
    """Store KEY=VALUE in config.yaml (written 0600); env vars still override it."""
    home = _home()
    parsed = _run_sync(lambda: cfg.set_value(home, key, value))
    shown = "<hidden>" if _secret(key) else parsed
    _announce(f"{key} = {shown}  (saved to {home.config_file})")


@config_app.command("show")
def config_show() -> None:
    """Print every setting after merging defaults, config.yaml and the environment."""
    values = _run_sync(lambda: cfg.merged(_home(), os.environ))
    table = Table("key", "env", "value", "meaning")
    for key in cfg.KEYS:
        value = values[key.yaml_name]
        if _secret(key.yaml_name) and value:
            value = "<set, hidden>"
        table.add_row(key.yaml_name, key.env_name, "" if value is None else str(value), key.help)
    out.print(table)


@config_app.command("path")
def config_path() -> None:
    """Print the config file's path."""
    _announce(str(_home().config_file))


# --- worker-host views ------------------------------------------------------------------------------


def _format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1000
    return str(size)


@models_app.callback()
def models(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the models this host's backends serve, with their metadata."""
    if ctx.invoked_subcommand is not None:
        return
    from pendra.worker.local import local_models

    settings = _run_sync(lambda: cfg.load_worker(_home(), require_key=False))
    found = _run(lambda: local_models(settings))
    if as_json:
        _announce(json.dumps([m.to_dict() for m in found], indent=2))
        return
    if not found:
        _announce("No models found. Is Ollama running? See: pendra backends")
        return
    table = Table("model", "backend", "context", "capabilities", "parameters", "quantisation",
                  "size")
    for m in found:
        table.add_row(m.id, m.backend, str(m.context_length or "?"), ", ".join(m.capabilities),
                      m.parameter_size, m.quantization_level, _format_size(m.size))
    out.print(table)


def _progress_bar() -> Any:
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=out)


WorkerOption = Annotated[str | None, typer.Option(
    help="Install on this worker (id or name) through the running control plane; "
         "without it, install into this host's Ollama.")]
VariantOption = Annotated[str | None, typer.Option(help="Catalogue variant (default: the first).")]


@models_app.command("install")
def models_install(model: Annotated[str, typer.Argument(help="Catalogue id, id:variant or Ollama tag.")],
                   worker: WorkerOption = None, variant: VariantOption = None) -> None:
    """Install a catalogue model, with live progress."""
    from pendra.catalogue.loader import load_catalogue

    entry, chosen = load_catalogue().resolve(model, variant)
    if entry is None or chosen is None:
        err.print(f"[red]NotFound[/red]: '{model}' is not in the catalogue")
        raise typer.Exit(1)
    if worker is not None:
        _remote_install(entry.id, chosen.id, worker)
        return
    from pendra.backends.base import InstallProgress
    from pendra.catalogue.installable import install_source
    from pendra.worker.local import install_local

    try:
        tag = install_source(entry, chosen, "ollama")
    except PendraError as exc:
        _print_error(type(exc).__name__, exc.message)
        raise typer.Exit(1) from exc
    settings = _run_sync(lambda: cfg.load_worker(_home(), require_key=False))
    with _progress_bar() as bar:
        task = bar.add_task(f"{tag}: starting", total=None)

        def on_progress(p: InstallProgress) -> None:
            bar.update(task, description=f"{tag}: {p.status}",
                       completed=p.completed, total=p.total or None)

        _run(lambda: install_local(settings, tag, on_progress))
    _announce(f"Installed {tag}.")


def _admin_client() -> tuple[str, dict[str, str]]:
    from pendra.server.state import read_server_state

    live = read_server_state(_home())
    url = os.environ.get("PENDRA_URL") or (live.url if live else None)
    token = os.environ.get("PENDRA_ADMIN_TOKEN") or (live.admin_token if live else None)
    if not url or not token:
        err.print("Control plane not reachable: run this on the control-plane host while "
                  "`pendra up` or `pendra server` is running (or set PENDRA_URL and "
                  "PENDRA_ADMIN_TOKEN).")
        raise typer.Exit(1)
    return url.rstrip("/"), {"Authorization": f"Bearer {token}"}


def _fail_from(response: httpx.Response) -> None:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    err.print(f"[red]Error {response.status_code}[/red]: {message}")
    raise typer.Exit(1)


def _remote_install(model: str, variant: str, worker: str) -> None:
    import httpx
    url, headers = _admin_client()
    with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30, read=None)) as http:
        response = http.post("/api/v1/installs",
                             json={"model": model, "variant": variant, "worker": worker})
        if response.status_code >= 400:
            _fail_from(response)
        op = response.json()
        final: dict[str, Any] = op
        with _progress_bar() as bar, http.stream("GET", f"/api/v1/installs/{op['id']}/events") as events:
            task = bar.add_task(f"{op['model_tag']} on {op['worker_name']}", total=None)
            for line in events.iter_lines():
                if not line.startswith("data: "):
                    continue
                final = json.loads(line[len("data: "):])
                bar.update(task, description=f"{final['model_tag']}: {final['status_text']}",
                           completed=final["completed"], total=final["total"] or None)
    if final["state"] != "succeeded":
        err.print(f"[red]Install {final['state']}[/red]: {final.get('error') or final['state']}")
        raise typer.Exit(1)
    _announce(f"Installed {final['model_tag']} on {final['worker_name']} ({final['id']}).")


@models_app.command("remove")
def models_remove(model: Annotated[str, typer.Argument(help="Installed model, e.g. llama3.2:1b.")],
                  worker: WorkerOption = None) -> None:
    """Remove an installed model (Ollama's DELETE /api/delete)."""
    if worker is not None:
        import httpx
        url, headers = _admin_client()
        response = httpx.delete(f"{url}/api/v1/workers/{worker}/models/{model}", headers=headers,
                                timeout=90)
        if response.status_code >= 400:
            _fail_from(response)
        _announce(f"Removed {model} from {worker}.")
        return
    from pendra.worker.local import remove_local

    settings = _run_sync(lambda: cfg.load_worker(_home(), require_key=False))
    _run(lambda: remove_local(settings, model))
    _announce(f"Removed {model}.")


@app.command()
def backends(as_json: JsonOption = False) -> None:
    """Show each backend: endpoints tried, verified or not and why, version."""
    from pendra.worker.local import local_backends

    settings = _run_sync(lambda: cfg.load_worker(_home(), require_key=False))
    found = _run(lambda: local_backends(settings))
    if as_json:
        _announce(json.dumps([b.to_dict() for b in found], indent=2))
        return
    table = Table("backend", "endpoint", "verified", "version", "tried", "reason")
    for b in found:
        table.add_row(b.kind, b.endpoint, "yes" if b.verified else "no", b.version,
                      ", ".join(b.tried), b.reason)
    out.print(table)


# --- control-plane administration --------------------------------------------------------------------


def _server_settings() -> cfg.ServerSettings:
    return _run_sync(lambda: cfg.load_server(_home()))


def _through_live_server(path: str, payload: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """POST a key change to the running control plane's admin API (so its key index has it before
    the command returns); None when no control plane answers here, and then the caller writes the
    store directly (a server started later reads it; one sharing the store elsewhere picks the
    change up within its key index's sync interval, see server/key_index.py)."""
    from pendra.server.state import read_server_state

    live = read_server_state(_home())
    url = os.environ.get("PENDRA_URL") or (live.url if live else None)
    token = os.environ.get("PENDRA_ADMIN_TOKEN") or (live.admin_token if live else None)
    if not url or not token:
        return None
    import httpx
    try:
        response = httpx.post(url.rstrip("/") + path, json=payload,
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.ConnectError:  # nothing listens there (server.yaml outlived its server)
        return None
    if response.status_code >= 400:
        _fail_from(response)
    answer: dict[str, Any] = response.json()
    return answer


RpmOption = Annotated[int | None, typer.Option(
    "--rpm", help="Requests per minute (0 = no limit; default: the organisation's).")]
TpmOption = Annotated[int | None, typer.Option(
    "--tpm", help="Tokens (prompt + completion) per minute (0 = no limit).")]
ConcurrentOption = Annotated[int | None, typer.Option(
    "--max-concurrent", help="Requests in flight at once (0 = no limit).")]
ModelsOption = Annotated[str | None, typer.Option(
    "--models", help="Models the key may use: comma-separated ids or patterns such as llama3.* "
                     "(\"\" = every model).")]
MonthlyOption = Annotated[int | None, typer.Option(
    "--monthly-tokens", help="Tokens per calendar month, UTC (0 = no limit).")]


def _limits_given(rpm: int | None, tpm: int | None, max_concurrent: int | None,
                  models: str | None, monthly_tokens: int | None) -> dict[str, Any]:
    """The limit options that were given, checked by the server's own rules (server/limits.py)."""
    from pendra.server.limits import parse_limits

    given = {"rpm": rpm, "tpm": tpm, "max_concurrent": max_concurrent,
             "monthly_tokens": monthly_tokens, "models": models}
    limits = parse_limits({k: v for k, v in given.items() if v is not None})
    return {k: v for k, v in limits.as_dict().items() if v is not None}


def _describe_limits(limits: dict[str, Any]) -> str:
    from pendra.server.limits import parse_limits

    return parse_limits(limits).describe()


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Option(help="What the key is for.")],
                rpm: RpmOption = None, tpm: TpmOption = None,
                max_concurrent: ConcurrentOption = None, models: ModelsOption = None,
                monthly_tokens: MonthlyOption = None) -> None:
    """Create an API key, optionally with limits, and print it once."""
    from pendra.server import local_admin
    from pendra.server.limits import parse_limits

    limits = _limits_given(rpm, tpm, max_concurrent, models, monthly_tokens)
    made = _through_live_server("/api/v1/keys", {"name": name} | limits)
    if made is not None:
        key_id, key_name, raw = made["id"], made["name"], made["key"]
    else:
        row, raw = _run(lambda: local_admin.create_key(_server_settings(), name,
                                                       parse_limits(limits)))
        key_id, key_name = row.id, row.name
    _announce(f"Created key {key_id} ({key_name}). Copy it now, it is not shown again:")
    _announce(raw)
    if limits:
        _announce(f"Limits: {_describe_limits(limits)}")


@keys_app.command("update")
def keys_update(key: Annotated[str, typer.Argument(help="Key id or prefix.")],
                rpm: RpmOption = None, tpm: TpmOption = None,
                max_concurrent: ConcurrentOption = None, models: ModelsOption = None,
                monthly_tokens: MonthlyOption = None) -> None:
    """Change a key's limits (the options given; 0 removes a limit); applies on its next request."""
    from pendra.server import local_admin
    from pendra.server.limits import parse_limits

    limits = _limits_given(rpm, tpm, max_concurrent, models, monthly_tokens)
    if not limits:
        raise typer.BadParameter("give at least one of --rpm, --tpm, --max-concurrent, --models, "
                                 "--monthly-tokens")
    changed = _through_live_server("/api/v1/keys/update", {"key": key} | limits)
    if changed is not None:
        key_id, key_name, now = changed["id"], changed["name"], changed["limits"]
    else:
        row = _run(lambda: local_admin.set_key_limits(_server_settings(), key,
                                                      parse_limits(limits)))
        key_id, key_name = row.id, row.name
        now = _key_limits(row)
    _announce(f"Updated {key_id} ({key_name}). Limits: {_describe_limits(now)}")


def _key_limits(row: Any) -> dict[str, Any]:
    from pendra.server.store.keys import limits_of

    return limits_of(row).as_dict()


@keys_app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """List API keys (prefixes only) with their limits."""
    from pendra.server import local_admin

    rows = _run(lambda: local_admin.list_keys(_server_settings()))
    data = [{"id": r.id, "name": r.name, "prefix": r.prefix, "created_at": _iso(r.created_at),
             "last_used_at": _iso(r.last_used_at), "revoked_at": _iso(r.revoked_at),
             "limits": _key_limits(r)} for r in rows]
    if as_json:
        _announce(json.dumps(data, indent=2))
        return
    table = Table("id", "name", "prefix", "created", "last used", "state", "limits")
    for d in data:
        table.add_row(d["id"], d["name"], d["prefix"] + "…", d["created_at"] or "",
                      d["last_used_at"] or "never", "revoked" if d["revoked_at"] else "active",
                      _describe_limits(d["limits"]))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    """Revoke a key; it stops working on the next request."""
    from pendra.server import local_admin

    revoked = _through_live_server("/api/v1/keys/revoke", {"key": key})
    if revoked is not None:
        key_id, key_name = revoked["id"], revoked["name"]
    else:
        row = _run(lambda: local_admin.revoke_key(_server_settings(), key))
        key_id, key_name = row.id, row.name
    _announce(f"Revoked {key_id} ({key_name}).")


@admin_app.command("reset-password")
def admin_reset_password(
        password_stdin: Annotated[bool, typer.Option(
            "--password-stdin", help="Read the new password from the first line of stdin "
            "instead of generating one.")] = False) -> None:
    """Set a new console admin password (generated and printed once unless --password-stdin);
    every console session ends. Works whether or not the server is running."""
    from pendra.server import local_admin

    given = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    password = _run(lambda: local_admin.reset_admin_password(_server_settings(), given))
    _announce("Admin password changed; every console session has been signed out.")
    if given is None:
        _announce("New password (copy it now, it is not shown again):")
        _announce(password)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _public_url(settings: cfg.ServerSettings) -> str:
    from pendra.server.state import read_server_state

    live = read_server_state(settings.home)
    if live is not None:
        return live.url
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


@workers_app.command("add")
def workers_add(name: Annotated[str, typer.Option(help="Friendly worker name.")]) -> None:
    """Enrol a worker and print its private key once, with the command to start it."""
    from pendra.server import local_admin
    from pendra.server.enrolment import worker_command, worker_ws_url

    settings = _server_settings()
    new = _run(lambda: local_admin.add_worker(settings, name))
    _announce(f"Enrolled worker {new.name} ({new.worker_id}). Its private key is shown only once:")
    _announce(new.private_key)
    _announce("Start it on the GPU host with:")
    _announce("  " + worker_command(new, worker_ws_url(_public_url(settings))))


@workers_app.command("list")
def workers_list(as_json: JsonOption = False) -> None:
    """List enrolled workers with what the running control plane sees of them."""
    from pendra.server import local_admin

    settings = _server_settings()
    rows = _run(lambda: local_admin.list_workers(settings))
    live = {w["id"]: w for w in (_live_status(settings) or {}).get("workers", [])}
    data = []
    for r in rows:
        w = live.get(r.id)
        data.append({"id": r.id, "name": r.name, "connected": w is not None,
                     "last_seen_at": _iso(r.last_seen_at),
                     "load": f"{w['in_flight']}/{w['max_concurrent']}" if w else "",
                     "backends": [b.get("kind") for b in w.get("backends", []) if b.get("verified")] if w else [],
                     "models": sorted(w.get("models", [])) if w else []})
    if as_json:
        _announce(json.dumps(data, indent=2))
        return
    table = Table("id", "name", "state", "load", "backends", "models")
    for d in data:
        state = "connected" if d["connected"] else f"offline (last seen {d['last_seen_at'] or 'never'})"
        table.add_row(d["id"], d["name"], state, d["load"], ", ".join(d["backends"]),
                      ", ".join(d["models"]))
    out.print(table)


@workers_app.command("remove")
def workers_remove(worker: Annotated[str, typer.Argument(help="Worker id or name.")]) -> None:
    """Remove a worker; its key stops working."""
    from pendra.server import local_admin

    row = _run(lambda: local_admin.remove_worker(_server_settings(), worker))
    _announce(f"Removed worker {row.name} ({row.id}).")


_SINCE_UNITS = {"m": 60, "h": 3600, "d": 86400}


def _parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    unit = text[-1:]
    if unit not in _SINCE_UNITS or not text[:-1].isdigit():
        raise typer.BadParameter("use a number and a unit, e.g. 30m, 24h, 7d")
    return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * _SINCE_UNITS[unit])


@app.command()
def usage(since: Annotated[str | None, typer.Option(help="Period, e.g. 24h or 7d.")] = "24h",
          as_json: JsonOption = False) -> None:
    """Summarise requests, tokens and latency (never content)."""
    from pendra.server import local_admin

    start = _parse_since(since)
    summary = _run(lambda: local_admin.usage_summary(_server_settings(), start))
    if as_json:
        _announce(json.dumps(summary, indent=2, default=str))
        return
    totals = summary.get("totals", {})
    _announce(f"Since {start.isoformat(timespec='minutes') if start else 'the beginning'}: "
              + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in totals.items()))
    for section in ("per_kind", "per_model", "per_key", "per_worker"):
        rows = summary.get(section) or []
        if not rows:
            continue
        table = Table(*rows[0].keys(), title=section.replace("_", " "))
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        out.print(table)


def _live_status(settings: cfg.ServerSettings) -> dict[str, Any] | None:
    """What the running control plane reports, or None when it is not reachable."""
    from pendra.server.state import read_server_state

    live = read_server_state(settings.home)
    url = os.environ.get("PENDRA_URL") or (live.url if live else None)
    token = os.environ.get("PENDRA_API_KEY") or (live.admin_token if live else None)
    if not url or not token:
        return None
    import httpx
    try:
        response = httpx.get(url.rstrip("/") + "/api/v1/status", timeout=5.0,
                             headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    data: dict[str, Any] = response.json()
    return data


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Show what the control plane sees: workers, their load, backends and models.

    Uses the local server's breadcrumb in $PENDRA_HOME, or PENDRA_URL + PENDRA_API_KEY from any host.
    """
    settings = _server_settings()
    data = _live_status(settings)
    if data is None:
        err.print("Control plane not reachable: start it with `pendra up`, or set PENDRA_URL and "
                  "PENDRA_API_KEY to reach a remote one.")
        raise typer.Exit(1)
    if as_json:
        _announce(json.dumps(data, indent=2))
        return
    workers = data.get("workers", [])
    _announce(f"{len(workers)} worker(s) connected, {len(data.get('models', []))} model(s) served")
    table = Table("worker", "load", "backends", "models")
    for w in workers:
        table.add_row(f"{w['name']} ({w['id']})", f"{w['in_flight']}/{w['max_concurrent']}",
                      ", ".join(f"{b.get('kind')} {b.get('version', '')}".strip()
                                for b in w.get("backends", []) if b.get("verified")),
                      ", ".join(sorted(w.get("models", []))))
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

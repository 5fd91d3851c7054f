"""The ``pendra`` command: a shell over the library.

Each command parses its arguments, loads settings, makes one call and returns an exit code. Only
Pendra's own errors are caught; they print as ``Kind: message`` and exit 1 (2 for configuration).
Every command that lists things prints through cli_output.py (a table, or ``--json``); installs
show their progress through cli_progress.py.
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

from pendra import __version__, heap
from pendra import config as cfg
from pendra.cli_output import Column, emit_json, emit_table
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
admin_app = typer.Typer(help="The console's first owner, `admin` (run on the control-plane host).",
                        no_args_is_help=True)
app.add_typer(admin_app, name="admin")
users_app = typer.Typer(help="Console users and their roles (run on the control-plane host).",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")

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
JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print JSON instead of a table (keys documented in docs/cli.md).")]
PublicUrlOption = Annotated[str | None, typer.Option(
    help="URL others reach this control plane at (default: config `public_url`, else the "
         "listen address, with this machine's address for 0.0.0.0).")]


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
       public_url: PublicUrlOption = None,
       log_format: LogFormatOption = LogFormat.text) -> None:
    """Run the control plane and a local worker in one process (SQLite under $PENDRA_HOME)."""
    from pendra.up import run_up

    _setup_logging(log_format)
    checked = _checked_public_url(public_url)
    heap.daemon_process()
    _run(lambda: _until_signalled(
        lambda stop: run_up(_home(), host=host, port=port, public_url=checked, stop=stop,
                            announce=_announce)),
        loop_factory=_daemon_loop())


@app.command()
def server(host: HostOption = None, port: PortOption = None,
           public_url: PublicUrlOption = None,
           log_format: LogFormatOption = LogFormat.text) -> None:
    """Run the control plane alone (DATABASE_URL selects SQLite or PostgreSQL)."""
    from pendra.server.daemon import run_server

    _setup_logging(log_format)
    checked = _checked_public_url(public_url)
    heap.daemon_process()
    _run(lambda: _until_signalled(
        lambda stop: run_server(_home(), host=host, port=port, public_url=checked, stop=stop,
                                announce=_announce)),
        loop_factory=_daemon_loop())


def _checked_public_url(raw: str | None) -> str | None:
    """``--public-url`` parsed by the same rule as PUBLIC_URL (exit 2 naming the option)."""
    if raw is None:
        return None
    try:
        return cfg.parse_public_url(raw)
    except ValueError as exc:
        _print_error("ConfigError", f"invalid value {raw!r} for --public-url: {exc}")
        raise typer.Exit(2) from exc


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
                          "PENDRA_METRICS_TOKEN", "vllm_api_key", "VLLM_API_KEY",
                          "lmstudio_api_token", "LMSTUDIO_API_TOKEN", "openai_endpoints",
                          "OPENAI_ENDPOINTS"})


def _secret(key: str) -> bool:
    """Whether ``key`` holds a secret: the worker's private key, the metrics token, the keys the
    worker holds for its backends."""
    return key in _SECRET_KEYS or key.lower() in _SECRET_KEYS


def _hidden(name: str, value: Any) -> Any:
    """A secret key's value as it may be shown: endpoints keep their URLs and names."""
    if name == "openai_endpoints":
        return [{**e, "api_key": "<hidden>" if e.get("api_key") else ""} for e in value]
    return "<set, hidden>"


@config_app.command("set")
def config_set(key: str, value: str) -> None:
    """Store KEY=VALUE in config.yaml (written 0600); env vars still override it."""
    home = _home()
    parsed = _run_sync(lambda: cfg.set_value(home, key, value))
    shown = "<hidden>" if _secret(key) else parsed
    _announce(f"{key} = {shown}  (saved to {home.config_file})")


@config_app.command("show")
def config_show(as_json: JsonOption = False) -> None:
    """Print every setting after merging defaults, config.yaml and the environment."""
    values = _run_sync(lambda: cfg.merged(_home(), os.environ))
    rows = []
    for key in cfg.KEYS:
        value = values[key.yaml_name]
        if _secret(key.yaml_name) and value:
            value = _hidden(key.yaml_name, value)
        rows.append({"key": key.yaml_name, "env": key.env_name,
                     "value": list(value) if isinstance(value, tuple) else value,
                     "meaning": key.help})
    if as_json:
        emit_json(out, rows)
        return
    emit_table(out, [Column("key", "key", whole=True), Column("env", "env", whole=True),
                     Column("value", "value", empty=""), Column("meaning", "meaning")], rows)


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
        emit_json(out, [m.to_dict() for m in found])
        return
    if not found:
        _announce("No models found. Is a backend (Ollama, LM Studio, vLLM) running? "
                  "See: pendra backends")
        return
    emit_table(out, [Column("model", "id", whole=True), Column("backend", "backend"),
                     Column("context", "context_length", empty="?", numeric=True),
                     Column("capabilities", "capabilities"),
                     Column("parameters", "parameter_size"),
                     Column("quantisation", "quantization_level"),
                     Column("size", "size", show=_format_size, numeric=True)],
               [m.to_dict() for m in found])


WorkerOption = Annotated[str | None, typer.Option(
    help="Install on this worker (id or name) through the running control plane; "
         "without it, install into this host's Ollama.")]
VariantOption = Annotated[str | None, typer.Option(help="Catalogue variant (default: the first).")]
BackendOption = Annotated[str | None, typer.Option(
    help="Target backend for a model that installs into more than one (ollama, lmstudio); "
         "default: Ollama here, or the worker's first backend the model installs into.")]


@models_app.command("install")
def models_install(model: Annotated[str, typer.Argument(help="Catalogue id, id:variant or Ollama tag.")],
                   worker: WorkerOption = None, variant: VariantOption = None,
                   backend: BackendOption = None) -> None:
    """Install a catalogue model, with live progress."""
    from pendra.catalogue.loader import load_catalogue

    entry, chosen = load_catalogue().resolve(model, variant)
    if entry is None or chosen is None:
        err.print(f"[red]NotFound[/red]: '{model}' is not in the catalogue")
        raise typer.Exit(1)
    if worker is not None:
        _remote_install(entry.id, chosen.id, worker, backend)
        return
    from pendra.backends.base import InstallProgress
    from pendra.catalogue.installable import install_source
    from pendra.worker.local import install_local

    try:
        tag = install_source(entry, chosen, backend or "ollama")
    except PendraError as exc:
        _print_error(type(exc).__name__, exc.message)
        raise typer.Exit(1) from exc
    from pendra.cli_progress import InstallView

    settings = _run_sync(lambda: cfg.load_worker(_home(), require_key=False))
    with InstallView(out, f"{tag}: starting") as view:

        def on_progress(p: InstallProgress) -> None:
            view.show(f"{tag}: {p.status}", p.completed, p.total)

        _run(lambda: install_local(settings, tag, on_progress, kind=backend or "ollama"))
    _announce(f"Installed {tag} ({view.rate.summary()}).")


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


def _remote_install(model: str, variant: str, worker: str, backend: str | None = None) -> None:
    import httpx

    from pendra.cli_progress import InstallView

    url, headers = _admin_client()
    with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30, read=None)) as http:
        response = http.post("/api/v1/installs",
                             json={"model": model, "variant": variant, "worker": worker,
                                   **({"backend": backend} if backend else {})})
        if response.status_code >= 400:
            _fail_from(response)
        op = response.json()
        final: dict[str, Any] = op
        with InstallView(out, f"{op['model_tag']} on {op['worker_name']}") as view, \
                http.stream("GET", f"/api/v1/installs/{op['id']}/events") as events:
            for line in events.iter_lines():
                if not line.startswith("data: "):
                    continue
                final = json.loads(line[len("data: "):])
                view.show(f"{final['model_tag']}: {final['status_text']}",
                          final["completed"] or 0, final["total"] or 0)
    if final["state"] != "succeeded":
        err.print(f"[red]Install {final['state']}[/red]: {final.get('error') or final['state']}")
        raise typer.Exit(1)
    _announce(f"Installed {final['model_tag']} on {final['worker_name']} ({final['id']}; "
              f"{view.rate.summary()}).")


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
    """Show every backend: endpoints tried, verified or not and why, version, capabilities."""
    from pendra.worker.local import local_backends

    settings = _run_sync(lambda: cfg.load_worker(_home(), require_key=False))
    found = _run(lambda: local_backends(settings))
    if as_json:
        emit_json(out, [b.to_dict() for b in found])
        return
    emit_table(out, [Column("backend", "kind", whole=True), Column("endpoint", "endpoint", whole=True),
                     Column("verified", "verified", show=lambda v: "yes" if v else "no"),
                     Column("version", "version"), Column("capabilities", "capabilities"),
                     Column("tried", "tried"),
                     Column("reason", "reason", empty="")],
               [b.to_dict() for b in found])


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
                monthly_tokens: MonthlyOption = None,
                user: Annotated[str | None, typer.Option(
                    help="Whose key it is: a console user's name (default: the first owner).")
                ] = None) -> None:
    """Create an API key, optionally with limits, and print it once."""
    from pendra.server import local_admin
    from pendra.server.limits import parse_limits

    limits = _limits_given(rpm, tpm, max_concurrent, models, monthly_tokens)
    made = _through_live_server("/api/v1/keys", {"name": name, "user": user} | limits)
    if made is not None:
        key_id, key_name, raw = made["id"], made["name"], made["key"]
    else:
        row, raw = _run(lambda: local_admin.create_key(_server_settings(), name,
                                                       parse_limits(limits), user))
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
    data = [{"id": r.id, "name": r.name, "prefix": r.prefix, "user": owner,
             "created_at": _iso(r.created_at),
             "last_used_at": _iso(r.last_used_at), "revoked_at": _iso(r.revoked_at),
             "limits": _key_limits(r)} for r, owner in rows]
    if as_json:
        emit_json(out, data)
        return
    emit_table(out, [Column("id", "id", whole=True), Column("name", "name", whole=True),
                     Column("user", "user", whole=True),
                     Column("prefix", "prefix", whole=True, show=lambda p: p + "…"),
                     Column("created", "created_at"),
                     Column("last used", "last_used_at", empty="never"),
                     Column("state", "revoked_at", empty="active", show=lambda _: "revoked"),
                     Column("limits", "limits", show=_describe_limits)],
               data)


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
    """Set a new password for the first owner (`admin`; generated and printed once unless
    --password-stdin); every console session of theirs ends. Works whether or not the server is
    running. For other users: `pendra users reset-password NAME`."""
    from pendra.server import local_admin

    given = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    password = _run(lambda: local_admin.reset_admin_password(_server_settings(), given))
    _announce("Password of the first owner (admin) changed; its console sessions have been signed "
              "out.")
    if given is None:
        _announce("New password (copy it now, it is not shown again):")
        _announce(password)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


RoleOption = Annotated[str, typer.Option(help="owner (may do everything) or member (the API, "
                                              "their own keys and usage).")]


@users_app.command("add")
def users_add(name: Annotated[str, typer.Argument(help="An email or a name.")],
              role: RoleOption = "member") -> None:
    """Invite a console user: prints a one-time password, shown once; they choose their own at
    first sign-in."""
    from pendra.server import local_admin

    row, password = _run(lambda: local_admin.add_user(_server_settings(), name, role))
    _announce(f"Added {row.name} ({row.role}, {row.id}). One-time password (copy it now, it is "
              "not shown again):")
    _announce(password)
    _announce("They sign in to the console with this name and password, then choose their own.")


@users_app.command("list")
def users_list(as_json: JsonOption = False) -> None:
    """List console users, their roles and state."""
    from pendra.server import local_admin

    rows = _run(lambda: local_admin.list_users(_server_settings()))
    data = [{"id": r.id, "name": r.name, "role": r.role, "created_at": _iso(r.created_at),
             "disabled_at": _iso(r.disabled_at), "must_change_password": r.must_change_password,
             "live_keys": live} for r, live in rows]
    if as_json:
        emit_json(out, data)
        return
    for d in data:
        d["state"] = "disabled" if d["disabled_at"] else (
            "invited" if d["must_change_password"] else "active")
    emit_table(out, [Column("id", "id", whole=True), Column("name", "name", whole=True),
                     Column("role", "role"), Column("created", "created_at"),
                     Column("state", "state"),
                     Column("live keys", "live_keys", numeric=True, show=str)], data)


UserArgument = Annotated[str, typer.Argument(help="The user's name or id.")]


@users_app.command("disable")
def users_disable(name: UserArgument) -> None:
    """Disable a user: their console sessions end and their live API keys are revoked."""
    from pendra.server import local_admin

    row, revoked = _run(lambda: local_admin.set_user_disabled(_server_settings(), name, True))
    _announce(f"Disabled {row.name}; {len(revoked)} API key(s) revoked.")


@users_app.command("enable")
def users_enable(name: UserArgument) -> None:
    """Let a disabled user sign in again (revoked keys stay revoked)."""
    from pendra.server import local_admin

    row, _ = _run(lambda: local_admin.set_user_disabled(_server_settings(), name, False))
    _announce(f"Enabled {row.name}.")


@users_app.command("remove")
def users_remove(name: UserArgument) -> None:
    """Remove a user: sessions end, live keys are revoked, and their keys (with their usage
    history) go to the first owner."""
    from pendra.server import local_admin

    row, revoked = _run(lambda: local_admin.remove_user(_server_settings(), name))
    _announce(f"Removed {row.name}; {len(revoked)} API key(s) revoked, their keys now belong to "
              "the first owner.")


@users_app.command("role")
def users_role(name: UserArgument,
               role: Annotated[str, typer.Argument(help="owner or member.")]) -> None:
    """Change a user's role."""
    from pendra.server import local_admin

    row = _run(lambda: local_admin.set_user_role(_server_settings(), name, role))
    _announce(f"{row.name} is now {'an' if row.role == 'owner' else 'a'} {row.role}.")


@users_app.command("reset-password")
def users_reset_password(name: UserArgument) -> None:
    """Give a user a new one-time password (printed once); their sessions end."""
    from pendra.server import local_admin

    row, password = _run(lambda: local_admin.reset_user_password(_server_settings(), name, None))
    _announce(f"New one-time password for {row.name} (copy it now, it is not shown again):")
    _announce(password)


def _public_url(settings: cfg.ServerSettings) -> str:
    """The running server's public URL (server.yaml), or the one it would have by the same rule
    (server/public_url.py)."""
    from pendra.server.public_url import public_base
    from pendra.server.state import read_server_state

    live = read_server_state(settings.home)
    if live is not None and live.public_url:
        return live.public_url
    return public_base(settings).url


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
        emit_json(out, data)
        return
    for d in data:
        d["state"] = ("connected" if d["connected"]
                      else f"offline (last seen {d['last_seen_at'] or 'never'})")
    emit_table(out, [Column("id", "id", whole=True), Column("name", "name", whole=True),
                     Column("state", "state"), Column("load", "load", empty=""),
                     Column("backends", "backends", empty=""),
                     Column("models", "models", empty="")], data)


@workers_app.command("remove")
def workers_remove(worker: Annotated[str, typer.Argument(help="Worker id or name.")]) -> None:
    """Remove a worker; its key stops working."""
    from pendra.server import local_admin

    row = _run(lambda: local_admin.remove_worker(_server_settings(), worker))
    _announce(f"Removed worker {row.name} ({row.id}).")


_AGO_UNITS = {"m": 60, "h": 3600, "d": 86400}


def _parse_moment(text: str | None, option: str) -> datetime | None:
    """``--since``/``--until``: a time ago (``30m``, ``24h``, ``7d``) or an ISO 8601 date or time
    (UTC unless it names a zone); None for an empty value."""
    if not text:
        return None
    unit, amount = text[-1:], text[:-1]
    if unit in _AGO_UNITS and amount.isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(amount) * _AGO_UNITS[unit])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("use a time ago (30m, 24h, 7d) or an ISO 8601 date or time "
                                 "(2026-12-01, 2026-12-01T09:00Z)", param_hint=option) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _usage_text(summary: dict[str, Any], start: datetime | None, end: datetime | None) -> None:
    from pendra.server.store.usage import FAILURE_CLASSES, NONE_LABELS

    t = summary["totals"]
    period = (f"{start.isoformat(timespec='minutes') if start else 'the beginning'} to "
              f"{end.isoformat(timespec='minutes') if end else 'now'}")
    failed = ", ".join(f"{t[name]:,} {label}" for name, label, *_ in FAILURE_CLASSES if t[name])
    _announce(f"From {period}: {t['requests']:,} requests, {t['served']:,} served, "
              f"{t['errors']:,} failed" + (f" ({failed})" if failed else ""))
    _announce(f"Tokens: {t['prompt_tokens']:,} prompt, {t['completion_tokens']:,} completion")
    if t["served"]:
        _announce(f"Latency of served requests: p50 {_ms(t['latency_p50_ms'])}, "
                  f"p95 {_ms(t['latency_p95_ms'])}, p99 {_ms(t['latency_p99_ms'])}, "
                  f"average {_ms(t['latency_avg_ms'])}")
    else:
        _announce("Latency of served requests: (none served)")
    labels = {name: label for name, label, *_ in FAILURE_CLASSES}
    numbers = [Column("requests", "requests", numeric=True),
               Column("served", "served", numeric=True),
               Column("failed", "errors", numeric=True),
               Column("tokens", "tokens", numeric=True),
               Column("avg latency (served)", "latency_avg_ms", show=_ms, numeric=True)]
    if summary["failures"]:
        emit_table(out, [Column("status", "status"),
                         Column("class", "class", show=lambda c: labels.get(c, c)),
                         Column("requests", "requests", numeric=True)],
                   summary["failures"], title="failures by status")
    for section, field, header in (("per_kind", "label", "API"),
                                   ("per_model", "model", "model served"),
                                   ("per_key", "key", "key"), ("per_worker", "worker", "worker")):
        rows = [r | {"tokens": r["prompt_tokens"] + r["completion_tokens"]}
                for r in summary.get(section) or []]
        if rows:
            emit_table(out, [Column(header, field, whole=True, empty=NONE_LABELS.get(field, "—")),
                             *numbers], rows, title=section.replace("_", " "))


@app.command()
def usage(since: Annotated[str | None, typer.Option(
              help="Start: a time ago (30m, 24h, 7d) or an ISO 8601 date or time.")] = "24h",
          until: Annotated[str | None, typer.Option(
              help="End (exclusive), in the same forms (default: now).")] = None,
          as_json: JsonOption = False,
          as_csv: Annotated[bool, typer.Option(
              "--csv", help="Print every usage record of the period as CSV (no content).")] = False
          ) -> None:
    """Summarise requests, failures, tokens and latency of a period (never content), or export
    its records as CSV."""
    from pendra.server import local_admin

    start, end = _parse_moment(since, "--since"), _parse_moment(until, "--until")
    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv", param_hint="--csv")
    if start is not None and end is not None and end <= start:
        raise typer.BadParameter("--until must come after --since", param_hint="--until")
    settings = _server_settings()
    if as_csv:
        _run(lambda: local_admin.export_usage(settings, start, end, sys.stdout.write))
        sys.stdout.flush()
        return
    summary = _run(lambda: local_admin.usage_summary(settings, start, end))
    if as_json:
        emit_json(out, summary)
        return
    _usage_text(summary, start, end)


@app.command()
def audit(since: Annotated[str | None, typer.Option(help="Period, e.g. 24h or 7d.")] = "24h",
          as_json: JsonOption = False) -> None:
    """Who changed keys, limits, workers, users and models, when and from where (newest first)."""
    from pendra.server import local_admin

    start = _parse_moment(since, "--since")
    rows = _run(lambda: local_admin.list_audit(_server_settings(), start))
    data = [{"created_at": _iso(r.created_at), "actor": r.actor, "address": r.address,
             "action": r.action, "target": r.target, "detail": r.detail} for r in rows]
    if as_json:
        emit_json(out, data)
        return
    emit_table(out, [Column("time", "created_at"), Column("who", "actor", whole=True),
                     Column("from", "address"), Column("action", "action"),
                     Column("target", "target", whole=True), Column("detail", "detail")], data)


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
        emit_json(out, data)
        return
    workers = data.get("workers", [])
    _announce(f"{len(workers)} worker(s) connected, {len(data.get('models', []))} model(s) served")
    rows = [{"worker": f"{w['name']} ({w['id']})", "load": f"{w['in_flight']}/{w['max_concurrent']}",
             "backends": [f"{b.get('kind')} {b.get('version', '')}".strip()
                          for b in w.get("backends", []) if b.get("verified")],
             "models": sorted(w.get("models", []))} for w in workers]
    emit_table(out, [Column("worker", "worker", whole=True), Column("load", "load"),
                     Column("backends", "backends", empty=""),
                     Column("models", "models", empty="")], rows)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

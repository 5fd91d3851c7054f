"""Settings for each role, merged once at start-up: defaults < ``$PENDRA_HOME/config.yaml`` < env.

Every key lives in ``KEYS`` (its environment name, its YAML name, type, default and meaning), so
loading, ``pendra config set`` and the documentation all read one table. Values are validated here,
and an invalid one raises ``ConfigError`` naming the key and the layer it came from. Nothing reads
the environment at import time: callers pass ``environ`` (tests pass their own dict).

A bounded key carries its ``Bounds`` in the table, and a value outside them is refused with the
allowed range wherever it comes from (``pendra config set``, config.yaml, the environment), never
clamped in silence. Bounds the wire protocol also enforces (``max_concurrent``) are read from
protocol/frames.py, so the worker's setting and the control plane's check are one rule.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from pendra.errors import ConfigError
from pendra.home import Home, too_open, write_private
from pendra.protocol.transcription import DEFAULT_MAX_AUDIO_BYTES, MAX_AUDIO_BYTES
from pendra.protocol.frames import MAX_CONCURRENT_MAX, MAX_CONCURRENT_MIN

log = logging.getLogger(__name__)

DEFAULT_WS_URL = "ws://127.0.0.1:8080"
# Seconds between discovery passes; short enough that a newly started Ollama is found promptly.
DEFAULT_REFRESH_INTERVAL_S = 10.0
# Once a backend stream has started, a token arrives at least every few seconds even on a CPU;
# a minute of silence is a stalled backend, not a slow one.
DEFAULT_STREAM_STALL_TIMEOUT_S = 60.0
# Before the first token a backend may be loading the model, queueing behind other requests or
# evaluating a long prompt, and Ollama's stream says nothing meanwhile; a dead or hung Ollama is
# caught sooner by verification (it stops answering /api/version), so this is only the backstop.
DEFAULT_FIRST_TOKEN_TIMEOUT_S = 600.0

# Console password attempts: a person mistyping is never held up; a script gets 10 guesses a
# minute per address and 2 a second in total (which also caps the CPU password hashing can take).
SIGN_IN_PER_ADDRESS_PER_MINUTE = 10
SIGN_IN_PER_SECOND = 2.0
# A metrics token is a shared secret in a Prometheus config: long enough not to be guessed.
METRICS_TOKEN_MIN_CHARS = 16


def _number(value: float) -> str:
    """A bound as people write it: whole numbers in full (47185920, not 4.71859e+07)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Bounds:
    """The values a number may take: ``low`` to ``high`` inclusive (either may be open-ended);
    ``above`` instead of ``low`` when the value must be strictly more (a timeout of 0 is none)."""

    low: float | None = None
    high: float | None = None
    above: float | None = None

    def allows(self, value: float) -> bool:
        return ((self.low is None or value >= self.low)
                and (self.above is None or value > self.above)
                and (self.high is None or value <= self.high))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"between {_number(self.low)} and {_number(self.high)}"
        parts = []
        if self.low is not None:
            parts.append(f"at least {_number(self.low)}")
        if self.above is not None:
            parts.append(f"more than {_number(self.above)}")
        if self.high is not None:
            parts.append(f"at most {_number(self.high)}")
        return " and ".join(parts)


# Half a day: longer than any of these waits is a typo (a number of milliseconds, say).
_MAX_WAIT_S = 43_200.0


@dataclass(frozen=True)
class Key:
    """One configuration key."""

    yaml_name: str
    env_name: str
    kind: str  # str | int | float | models | bool | url
    default: Any
    help: str
    role: str  # worker | server | both
    bounds: Bounds | None = None


KEYS: tuple[Key, ...] = (
    Key("app_server_ws_url", "APP_SERVER_WS_URL", "str", DEFAULT_WS_URL,
        "Base URL of the control plane the worker dials; /ws/gpu is appended.", "worker"),
    Key("gpu_worker_private_key", "GPU_WORKER_PRIVATE_KEY", "str", "",
        "Base64 Ed25519 private key from `pendra workers add`; the worker refuses to start without it.",
        "worker"),
    Key("worker_id", "WORKER_ID", "str", "",
        "Stable worker id `wrk-<hex>`; generated and saved on first run.", "worker"),
    Key("worker_name", "WORKER_NAME", "str", "",
        "Friendly name shown in the console and in X-Worker-Name (default: the hostname).", "worker"),
    Key("models", "MODELS", "models", None,
        "Serve only these models: a JSON list of ids or of {\"id\": ...} objects (default: all).",
        "worker"),
    Key("max_concurrent", "MAX_CONCURRENT", "int", 1,
        f"Most inference requests in flight on this worker, {MAX_CONCURRENT_MIN} to "
        f"{MAX_CONCURRENT_MAX}.", "worker", Bounds(MAX_CONCURRENT_MIN, MAX_CONCURRENT_MAX)),
    Key("ollama_endpoint", "OLLAMA_ENDPOINT", "str", "",
        "Ollama base URL; when empty, probe http://localhost:11434 then "
        "http://host.docker.internal:11434.", "worker"),
    Key("speaches_endpoint", "SPEACHES_ENDPOINT", "str", "",
        "Speaches base URL; when empty, probe http://localhost:8000 then "
        "http://host.docker.internal:8000 (verified as Speaches, so a vLLM there is not taken).",
        "worker"),
    Key("vllm_endpoint", "VLLM_ENDPOINT", "str", "",
        "vLLM base URL; when empty, probe http://localhost:8000 then "
        "http://host.docker.internal:8000.", "worker"),
    Key("lmstudio_endpoint", "LMSTUDIO_ENDPOINT", "str", "",
        "LM Studio base URL; when empty, probe http://localhost:1234 then "
        "http://host.docker.internal:1234.", "worker"),
    Key("lmstudio_api_token", "LMSTUDIO_API_TOKEN", "str", "",
        "LM Studio API token, when its server requires authentication.", "worker"),
    Key("vllm_api_key", "VLLM_API_KEY", "str", "",
        "The key vLLM was started with (--api-key), if any.", "worker"),
    Key("openai_endpoints", "OPENAI_ENDPOINTS", "endpoints", (),
        "Other OpenAI-compatible servers (llama-server, SGLang, TGI, LocalAI, ...), never probed: "
        "a JSON list of URLs or of {\"url\", \"name\", \"api_key\"} objects.", "worker"),
    Key("backends_disabled", "BACKENDS_DISABLED", "names", (),
        "Backends never probed nor used, comma-separated (e.g. vllm,lmstudio).", "worker"),
    Key("refresh_interval", "REFRESH_INTERVAL", "float", DEFAULT_REFRESH_INTERVAL_S,
        "Seconds between backend discovery passes (the refresh tick).", "worker",
        Bounds(0.1, _MAX_WAIT_S)),
    Key("ollama_num_ctx_cap", "OLLAMA_NUM_CTX_CAP", "int", 0,
        "Upper bound on the num_ctx injected into chat requests (0 = no cap).", "worker",
        Bounds(low=0)),
    Key("stream_stall_timeout", "STREAM_STALL_TIMEOUT", "float", DEFAULT_STREAM_STALL_TIMEOUT_S,
        "Seconds a backend stream may stay silent after its first token before the request "
        "fails as stalled.", "worker", Bounds(above=0, high=_MAX_WAIT_S)),
    Key("first_token_timeout", "FIRST_TOKEN_TIMEOUT", "float", DEFAULT_FIRST_TOKEN_TIMEOUT_S,
        "Seconds a backend may take to send its first token (loading the model, queueing, "
        "reading the prompt) before the request fails.", "worker",
        Bounds(above=0, high=_MAX_WAIT_S)),
    Key("metrics_port", "METRICS_PORT", "int", 0,
        "Port of the worker's own Prometheus /metrics (backend up, in flight, backend latency); "
        "0 = off.", "worker", Bounds(0, 65535)),
    Key("metrics_host", "METRICS_HOST", "str", "127.0.0.1",
        "Address the worker's /metrics listens on (local only unless you change it).", "worker"),
    Key("database_url", "DATABASE_URL", "str", "",
        "SQLAlchemy URL of the store (default: SQLite at $PENDRA_HOME/pendra.db); "
        "e.g. postgresql+asyncpg://user@host/db.", "server"),
    Key("host", "PENDRA_HOST", "str", "127.0.0.1",
        "Address the control plane listens on.", "server"),
    Key("port", "PENDRA_PORT", "int", 8080, "Port the control plane listens on (0: any free "
        "port).", "server", Bounds(0, 65535)),
    Key("public_url", "PUBLIC_URL", "url", "",
        "URL workers, clients and browsers reach the control plane at (http[s]://host[:port]), "
        "used in every URL Pendra prints or shows; when empty, the listen address, with this "
        "machine's own address in place of 0.0.0.0 or ::.", "server"),
    Key("heartbeat_interval", "HEARTBEAT_INTERVAL", "float", 5.0,
        "Seconds between a worker's pings on /ws/gpu (the server answers each) and between "
        "the control plane's batched last-seen writes.", "both", Bounds(above=0, high=3600)),
    Key("heartbeat_timeout", "HEARTBEAT_TIMEOUT", "float", 15.0,
        "Seconds of silence after which a /ws/gpu peer is dropped.", "both",
        Bounds(above=0, high=3600)),
    Key("queue_timeout", "QUEUE_TIMEOUT", "float", 10.0,
        "Seconds a request waits for a free worker before 503 with Retry-After.", "server",
        Bounds(0, _MAX_WAIT_S)),
    Key("max_body_bytes", "MAX_BODY_BYTES", "int", 32 * 1024 * 1024,
        "Largest request body the API accepts; larger ones get 413 before being read whole.",
        "server", Bounds(low=1)),
    Key("max_audio_bytes", "MAX_AUDIO_BYTES", "int", DEFAULT_MAX_AUDIO_BYTES,
        "Largest audio file a transcription upload may carry (OpenAI's 25 MiB by default, at "
        f"most {MAX_AUDIO_BYTES // (1024 * 1024)} MiB); larger ones get 413.", "server",
        Bounds(1, MAX_AUDIO_BYTES)),
    Key("sign_in_attempts_per_address_per_minute", "SIGN_IN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
        "int", SIGN_IN_PER_ADDRESS_PER_MINUTE,
        "Console password attempts one client address may make a minute (also its burst); more "
        "get 429 with Retry-After.", "server", Bounds(low=1)),
    Key("sign_in_attempts_per_second", "SIGN_IN_ATTEMPTS_PER_SECOND", "float", SIGN_IN_PER_SECOND,
        "Console password attempts per second from all addresses together (burst: 5 s worth); "
        "more get 429 with Retry-After.", "server", Bounds(low=0.1)),
    Key("header_timeout", "HEADER_TIMEOUT", "float", 10.0,
        "Seconds a client has to send a request's headers (from connecting, or from the request's "
        "first byte on a kept-alive connection); then 408 and the connection is closed.", "server",
        Bounds(0.1, 3600)),
    Key("metrics_token", "PENDRA_METRICS_TOKEN", "str", "",
        "Bearer token Prometheus sends to read the control plane's /metrics (at least "
        f"{METRICS_TOKEN_MIN_CHARS} characters; empty = only the local admin token reads it).",
        "server"),
    Key("max_connections", "MAX_CONNECTIONS", "int", 2048,
        "Most connections open at once, workers' WebSockets included; one more gets 503 with "
        "Retry-After.", "server", Bounds(low=1)),
    Key("responses_retention_days", "RESPONSES_RETENTION_DAYS", "float", 30.0,
        "Days a Responses API answer stored with `store: true` is kept (for previous_response_id "
        "and GET /responses/{id}); expired ones are deleted.", "server",
        Bounds(above=0, high=3650)),
    # The organisation's default limits for API keys that set none (server/limits.py).
    Key("key_default_rpm", "KEY_DEFAULT_RPM", "int", 0,
        "Requests per minute an API key may send unless it sets its own (0 = no limit).",
        "server"),
    Key("key_default_tpm", "KEY_DEFAULT_TPM", "int", 0,
        "Tokens (prompt + completion) per minute an API key may use unless it sets its own "
        "(0 = no limit).", "server"),
    Key("key_default_max_concurrent", "KEY_DEFAULT_MAX_CONCURRENT", "int", 0,
        "Requests an API key may have in flight at once unless it sets its own (0 = no limit).",
        "server"),
    Key("key_default_monthly_tokens", "KEY_DEFAULT_MONTHLY_TOKENS", "int", 0,
        "Tokens an API key may use per calendar month (UTC) unless it sets its own "
        "(0 = no limit).", "server"),
    Key("key_default_models", "KEY_DEFAULT_MODELS", "str", "",
        "Models an API key may use unless it sets its own: comma-separated ids or patterns such "
        "as llama3.* (empty = every model).", "server"),
)
KEYS_BY_NAME: dict[str, Key] = {k.yaml_name: k for k in KEYS}
# The ``source`` of a value given to ``pendra config set``.
COMMAND_LINE = "the command line"


def _parse_models(raw: Any) -> tuple[str, ...] | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg}") from exc
    if not isinstance(raw, list):
        raise ValueError("must be a JSON list of model ids or {\"id\": ...} objects")
    ids: list[str] = []
    for item in raw:
        if isinstance(item, str) and item:
            ids.append(item)
        elif isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            ids.append(item["id"])
        else:
            raise ValueError(f"entry {item!r} is neither an id nor an object with an \"id\"")
    return tuple(ids)


_KIND_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
# Backend kinds with a built-in meaning: an OPENAI_ENDPOINTS entry may not take one of these names.
RESERVED_KINDS = frozenset({"ollama", "lmstudio", "vllm", "speaches", "pendra"})
# Generic endpoints one worker may list: with the built-in kinds this stays within the 16 backends
# an inventory may carry (protocol/inventory.py MAX_BACKENDS).
MAX_OPENAI_ENDPOINTS = 8


def _parse_names(raw: Any) -> tuple[str, ...]:
    """Backend kinds: a comma-separated string, or a JSON/YAML list of names."""
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        text = raw.strip()
        items: Any = json.loads(text) if text.startswith("[") else text.split(",")
    else:
        items = raw
    if not isinstance(items, list):
        raise ValueError("must be a comma-separated list of backend names, e.g. vllm,lmstudio")
    names = []
    for item in items:
        name = str(item).strip().lower()
        if not _KIND_NAME.match(name):
            raise ValueError(f"{item!r} is not a backend name (a-z, 0-9, _ and -)")
        names.append(name)
    return tuple(names)


def _parse_endpoints(raw: Any) -> tuple[dict[str, str], ...]:
    """OpenAI-compatible endpoints: a JSON/YAML list of URLs or of {"url", "name", "api_key"}.

    Each gets a name (its backend kind): the one given, else ``openai`` for the first unnamed and
    ``openai-2``, ``openai-3``… after it; names must be unique."""
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        text = raw.strip()
        try:
            raw = json.loads(text) if text.startswith("[") else [text]
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg}") from exc
    if not isinstance(raw, list):
        raise ValueError("must be a list of URLs or of {\"url\": ..., \"name\": ...} objects")
    if len(raw) > MAX_OPENAI_ENDPOINTS:
        raise ValueError(f"at most {MAX_OPENAI_ENDPOINTS} endpoints (got {len(raw)})")
    found: list[dict[str, str]] = []
    unnamed = 0
    for item in raw:
        entry = {"url": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ValueError(f"entry {item!r} is neither a URL nor an object with a \"url\"")
        url = entry["url"].strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        name = entry.get("name")
        if name is None:
            unnamed += 1
            name = "openai" if unnamed == 1 else f"openai-{unnamed}"
        name = str(name).strip().lower()
        if not _KIND_NAME.match(name):
            raise ValueError(f"name {name!r} must be 1-32 of a-z, 0-9, _ and -")
        if name in RESERVED_KINDS:
            raise ValueError(f"name {name!r} is a built-in backend's; pick another")
        if name in {e["name"] for e in found}:
            raise ValueError(f"name {name!r} is given to two endpoints")
        api_key = entry.get("api_key", "")
        found.append({"name": name, "url": url, "api_key": str(api_key or "")})
    return tuple(found)


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def parse_public_url(raw: Any) -> str:
    """An http(s) base URL with a host and nothing after its path ("" when unset), without a
    trailing slash."""
    text = "" if raw is None else str(raw).strip()
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. "
                         "https://pendra.example.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, a fragment or credentials")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from exc
    return text.rstrip("/")


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "url": parse_public_url,
    "str": lambda v: "" if v is None else str(v),
    "int": lambda v: int(v),
    "float": lambda v: float(v),
    "models": _parse_models,
    "bool": _parse_bool,
    "names": _parse_names,
    "endpoints": _parse_endpoints,
}


def parse_value(key: Key, raw: Any, source: str) -> Any:
    """Parse one raw value for ``key``; errors name the key and ``source`` (yaml path or env)."""
    where = {"environment": key.env_name, COMMAND_LINE: key.yaml_name}.get(
        source, f"{key.yaml_name} in {source}")
    try:
        value = _PARSERS[key.kind](raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value {raw!r} for {where}: {exc}") from exc
    if key.bounds is not None and not key.bounds.allows(value):
        raise ConfigError(f"{where} must be {key.bounds.describe()} (got {value:g})")
    return value


def read_file(home: Home) -> dict[str, Any]:
    """The YAML layer as a dict (empty when there is no file)."""
    path = home.config_file
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return data


def write_file(home: Home, data: Mapping[str, Any]) -> None:
    write_private(home.config_file, yaml.safe_dump(dict(data), sort_keys=False))


def set_value(home: Home, name: str, value: str) -> Any:
    """``pendra config set``: validate and store one key in config.yaml (0600)."""
    key = KEYS_BY_NAME.get(name) or next((k for k in KEYS if k.env_name == name), None)
    if key is None:
        raise ConfigError(f"unknown config key {name!r}; known keys: {', '.join(KEYS_BY_NAME)}")
    parsed = parse_value(key, value, COMMAND_LINE)
    if key.role != "worker":
        # The checks start-up makes beyond Bounds (key limits, the metrics token), on this value
        # alone: the rest at their defaults, which pass.
        _server_checks({k.yaml_name: k.default for k in KEYS} | {key.yaml_name: parsed})
    data = read_file(home)
    stored: Any = list(parsed) if isinstance(parsed, tuple) else parsed
    data[key.yaml_name] = stored
    write_file(home, data)
    return parsed


def merged(home: Home, environ: Mapping[str, str]) -> dict[str, Any]:
    """Every key's value after the three layers, parsed and validated."""
    file_layer = read_file(home)
    unknown = sorted(set(file_layer) - set(KEYS_BY_NAME))
    if unknown:
        log.warning("ignoring unknown keys in %s: %s", home.config_file, ", ".join(unknown))
    values: dict[str, Any] = {}
    for key in KEYS:
        value = key.default
        if key.yaml_name in file_layer:
            value = parse_value(key, file_layer[key.yaml_name], str(home.config_file))
        if key.env_name in environ:
            value = parse_value(key, environ[key.env_name], "environment")
        values[key.yaml_name] = value
    return values


@dataclass(frozen=True)
class WorkerSettings:
    server_ws_url: str
    private_key: str
    worker_id: str
    worker_name: str
    models: tuple[str, ...] | None
    max_concurrent: int
    ollama_endpoint: str
    refresh_interval_s: float
    ollama_num_ctx_cap: int
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    stream_stall_timeout_s: float = DEFAULT_STREAM_STALL_TIMEOUT_S
    first_token_timeout_s: float = DEFAULT_FIRST_TOKEN_TIMEOUT_S
    speaches_endpoint: str = ""
    metrics_port: int = 0  # 0: no /metrics
    metrics_host: str = "127.0.0.1"
    vllm_endpoint: str = ""
    vllm_api_key: str = ""
    lmstudio_endpoint: str = ""
    lmstudio_api_token: str = ""
    # Each {"name", "url", "api_key"}: see _parse_endpoints.
    openai_endpoints: tuple[dict[str, str], ...] = ()
    backends_disabled: tuple[str, ...] = ()

    @property
    def gpu_ws_url(self) -> str:
        return self.server_ws_url.rstrip("/") + "/ws/gpu"


@dataclass(frozen=True)
class ServerSettings:
    home: Home
    database_url: str
    host: str
    port: int
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    queue_timeout_s: float
    max_body_bytes: int
    header_timeout_s: float
    max_connections: int
    # Per-start token the local CLI uses to reach the live server (see server/state.py).
    admin_token: str = ""
    sign_in_per_address_per_minute: int = SIGN_IN_PER_ADDRESS_PER_MINUTE
    sign_in_per_second: float = SIGN_IN_PER_SECOND
    max_audio_bytes: int = DEFAULT_MAX_AUDIO_BYTES
    responses_retention_s: float = 30 * 86400.0
    # The organisation's default API-key limits, as server/limits.py parses them.
    key_defaults: dict[str, Any] = field(default_factory=dict)
    metrics_token: str = ""
    # PUBLIC_URL: where others reach this control plane ("" = work it out; server/public_url.py).
    public_url: str = ""


def new_worker_id() -> str:
    return "wrk-" + secrets.token_hex(4)


def warn_if_open(home: Home) -> bool:
    """Warn (once, at start-up) when config.yaml is readable by others; returns True if it was."""
    if too_open(home.config_file):
        log.warning("%s holds a private key and is readable by others; run: chmod 600 %s",
                    home.config_file, home.config_file)
        return True
    return False


def load_worker(home: Home, environ: Mapping[str, str] | None = None, *,
                require_key: bool = True) -> WorkerSettings:
    """Build the worker's settings. Generates and persists ``worker_id`` on first run."""
    env = os.environ if environ is None else environ
    warn_if_open(home)
    values = merged(home, env)
    worker_id = values["worker_id"]
    if not worker_id:
        worker_id = new_worker_id()
        data = read_file(home)
        data["worker_id"] = worker_id
        write_file(home, data)
        log.info("generated worker id %s and saved it to %s", worker_id, home.config_file)
    if require_key and not values["gpu_worker_private_key"]:
        raise ConfigError(
            "no worker private key: set GPU_WORKER_PRIVATE_KEY or gpu_worker_private_key in "
            f"{home.config_file}. Get one on the control plane with `pendra workers add --name NAME` "
            "(or Workers → Add worker in the console).")
    return WorkerSettings(
        server_ws_url=values["app_server_ws_url"],
        private_key=values["gpu_worker_private_key"],
        worker_id=worker_id,
        worker_name=values["worker_name"] or socket.gethostname(),
        models=values["models"],
        max_concurrent=values["max_concurrent"],
        ollama_endpoint=values["ollama_endpoint"].rstrip("/"),
        refresh_interval_s=values["refresh_interval"],
        ollama_num_ctx_cap=values["ollama_num_ctx_cap"],
        heartbeat_interval_s=values["heartbeat_interval"],
        heartbeat_timeout_s=values["heartbeat_timeout"],
        stream_stall_timeout_s=values["stream_stall_timeout"],
        first_token_timeout_s=values["first_token_timeout"],
        speaches_endpoint=values["speaches_endpoint"].rstrip("/"),
        metrics_port=values["metrics_port"],
        metrics_host=values["metrics_host"] or "127.0.0.1",
        vllm_endpoint=values["vllm_endpoint"].rstrip("/"),
        vllm_api_key=values["vllm_api_key"],
        lmstudio_endpoint=values["lmstudio_endpoint"].rstrip("/"),
        lmstudio_api_token=values["lmstudio_api_token"],
        openai_endpoints=values["openai_endpoints"],
        backends_disabled=values["backends_disabled"],
    )


def _metrics_token(values: Mapping[str, Any]) -> str:
    token = str(values["metrics_token"]).strip()
    if token and len(token) < METRICS_TOKEN_MIN_CHARS:
        raise ConfigError(f"PENDRA_METRICS_TOKEN / metrics_token must be at least "
                          f"{METRICS_TOKEN_MIN_CHARS} characters (got {len(token)}); make one "
                          "with: openssl rand -hex 24")
    return token


def load_server(home: Home, environ: Mapping[str, str] | None = None) -> ServerSettings:
    env = os.environ if environ is None else environ
    values = merged(home, env)
    url = values["database_url"] or f"sqlite+aiosqlite:///{home.database_file}"
    return ServerSettings(
        home=home,
        database_url=url,
        host=values["host"],
        port=values["port"],
        heartbeat_interval_s=values["heartbeat_interval"],
        heartbeat_timeout_s=values["heartbeat_timeout"],
        queue_timeout_s=values["queue_timeout"],
        max_body_bytes=values["max_body_bytes"],
        sign_in_per_address_per_minute=values["sign_in_attempts_per_address_per_minute"],
        sign_in_per_second=values["sign_in_attempts_per_second"],
        header_timeout_s=values["header_timeout"],
        max_connections=values["max_connections"],
        max_audio_bytes=values["max_audio_bytes"],
        responses_retention_s=values["responses_retention_days"] * 86400.0,
        public_url=values["public_url"],
        **_server_checks(values),
    )


def _server_checks(values: Mapping[str, Any]) -> dict[str, Any]:
    """The server settings checked by rules other modules own (ConfigError when one fails)."""
    return {"key_defaults": _key_defaults(values), "metrics_token": _metrics_token(values)}


def _key_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``key_default_*`` settings, checked by the limits' own rules (ConfigError if bad)."""
    from pendra.errors import InvalidRequest
    from pendra.server.limits import parse_limits

    raw = {name: values[f"key_default_{name}"]
           for name in ("rpm", "tpm", "max_concurrent", "monthly_tokens", "models")}
    try:
        limits = parse_limits(raw, where="key_default_")
    except InvalidRequest as exc:
        raise ConfigError(f"invalid default key limit: {exc.message}") from exc
    return limits.as_dict()

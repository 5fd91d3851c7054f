"""Layered configuration: defaults < config.yaml < environment, validated once."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pendra import config as cfg
from pendra.errors import ConfigError
from pendra.home import Home

ROOT = Path(__file__).resolve().parents[1]


def test_layers_later_wins(tmp_path: Path) -> None:
    """The environment beats config.yaml, which beats the built-in default."""
    home = Home(tmp_path)
    cfg.write_file(home, {"max_concurrent": 4, "worker_name": "from-file", "refresh_interval": 3})
    s = cfg.load_worker(home, {"MAX_CONCURRENT": "8", "GPU_WORKER_PRIVATE_KEY": "k"})
    assert s.max_concurrent == 8
    assert s.worker_name == "from-file"
    assert s.refresh_interval_s == 3.0
    assert s.ollama_endpoint == ""  # default


def test_max_concurrent_out_of_range_is_refused_with_the_range(tmp_path: Path) -> None:
    """MAX_CONCURRENT outside [1, 64] stops start-up with the allowed range, from the environment
    and from config.yaml alike; it is never clamped in silence."""
    home = Home(tmp_path)
    env = {"GPU_WORKER_PRIVATE_KEY": "k"}
    assert cfg.load_worker(home, env | {"MAX_CONCURRENT": "64"}).max_concurrent == 64
    with pytest.raises(ConfigError, match=r"MAX_CONCURRENT must be between 1 and 64 \(got 0\)"):
        cfg.load_worker(home, env | {"MAX_CONCURRENT": "0"})
    cfg.write_file(home, {"max_concurrent": 1000})
    with pytest.raises(ConfigError, match=r"max_concurrent in .*config.yaml must be between 1 "
                                          r"and 64 \(got 1000\)"):
        cfg.load_worker(home, env)


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("max_concurrent", "200", "between 1 and 64"),
    ("refresh_interval", "0.01", "between 0.1 and 43200"),
    ("stream_stall_timeout", "0", "more than 0 and at most 43200"),
    ("ollama_num_ctx_cap", "-1", "at least 0"),
    ("port", "70000", "between 0 and 65535"),
    ("max_connections", "0", "at least 1"),
    ("HEADER_TIMEOUT", "0", "between 0.1 and 3600"),
    ("metrics_port", "70000", "between 0 and 65535"),
    ("key_default_rpm", "-5", "key_default_rpm must be between"),
    ("metrics_token", "short", "at least 16 characters"),
])
def test_config_set_refuses_out_of_range_and_keeps_the_file(tmp_path: Path, key: str, value: str,
                                                            allowed: str) -> None:
    """`pendra config set` refuses a bounded key's out-of-range value with the allowed range and
    leaves config.yaml as it was."""
    home = Home(tmp_path)
    cfg.set_value(home, "worker_name", "box")
    before = home.config_file.read_text()
    with pytest.raises(ConfigError, match=re.escape(allowed)):
        cfg.set_value(home, key, value)
    assert home.config_file.read_text() == before


def test_the_protocol_and_the_setting_share_max_concurrents_bounds() -> None:
    """The hello frame the control plane checks and the worker's setting use one range."""
    from pendra.protocol import frames

    bounds = cfg.KEYS_BY_NAME["max_concurrent"].bounds
    assert bounds is not None
    assert (bounds.low, bounds.high) == (frames.MAX_CONCURRENT_MIN, frames.MAX_CONCURRENT_MAX)
    field = frames.Hello.model_fields["max_concurrent"]
    limits = {type(m).__name__: m for m in field.metadata}
    assert limits["Ge"].ge == bounds.low and limits["Le"].le == bounds.high


@pytest.mark.parametrize("raw", ["pendra.example.com", "ftp://x", "http://", "https://h/?q=1",
                                 "http://u:p@h", "http://h:99999"])
def test_public_url_must_be_an_http_base_url(tmp_path: Path, raw: str) -> None:
    """PUBLIC_URL is an http(s) URL with a host and no query, fragment or credentials."""
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        cfg.load_server(Home(tmp_path), {"PUBLIC_URL": raw})
    assert cfg.load_server(Home(tmp_path), {"PUBLIC_URL": "https://p.example/pendra/"}
                           ).public_url == "https://p.example/pendra"


def test_models_filter_accepts_ids_and_objects(tmp_path: Path) -> None:
    """MODELS is a JSON list of ids or {"id": ...} objects; YAML lists work in the file."""
    home = Home(tmp_path)
    env = {"GPU_WORKER_PRIVATE_KEY": "k", "MODELS": '["a:1", {"id": "b:2"}]'}
    assert cfg.load_worker(home, env).models == ("a:1", "b:2")
    cfg.write_file(home, {"models": ["c", {"id": "d"}]})
    assert cfg.load_worker(home, {"GPU_WORKER_PRIVATE_KEY": "k"}).models == ("c", "d")
    assert cfg.load_worker(home, {"GPU_WORKER_PRIVATE_KEY": "k", "MODELS": ""}).models is None


def test_stream_limits_default_and_must_be_positive(tmp_path: Path) -> None:
    """The stall limit defaults to 60 s and the first-token limit to 600 s; a value of 0 or less
    (which would fail every stream) stops start-up naming the key."""
    home = Home(tmp_path)
    env = {"GPU_WORKER_PRIVATE_KEY": "k"}
    s = cfg.load_worker(home, env)
    assert (s.stream_stall_timeout_s, s.first_token_timeout_s) == (60.0, 600.0)
    s = cfg.load_worker(home, env | {"STREAM_STALL_TIMEOUT": "2.5", "FIRST_TOKEN_TIMEOUT": "30"})
    assert (s.stream_stall_timeout_s, s.first_token_timeout_s) == (2.5, 30.0)
    with pytest.raises(ConfigError, match="STREAM_STALL_TIMEOUT"):
        cfg.load_worker(home, env | {"STREAM_STALL_TIMEOUT": "0"})
    with pytest.raises(ConfigError, match="FIRST_TOKEN_TIMEOUT"):
        cfg.load_worker(home, env | {"FIRST_TOKEN_TIMEOUT": "-1"})


def test_responses_retention_defaults_to_30_days_and_is_bounded(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert cfg.load_server(home, {}).responses_retention_s == 30 * 86400
    assert cfg.load_server(home, {"RESPONSES_RETENTION_DAYS": "0.5"}).responses_retention_s == 43200
    for bad in ("0", "-1", "5000"):
        with pytest.raises(ConfigError, match="RESPONSES_RETENTION_DAYS"):
            cfg.load_server(home, {"RESPONSES_RETENTION_DAYS": bad})


def test_metrics_settings_are_checked_at_start(tmp_path: Path) -> None:
    """The metrics token is empty by default and refused when shorter than 16 characters (naming
    the key and how to make one); the worker's metrics port must be a port."""
    home = Home(tmp_path)
    assert cfg.load_server(home, {}).metrics_token == ""
    token = "x" * cfg.METRICS_TOKEN_MIN_CHARS
    assert cfg.load_server(home, {"PENDRA_METRICS_TOKEN": token}).metrics_token == token
    with pytest.raises(ConfigError, match="PENDRA_METRICS_TOKEN.*at least 16.*openssl"):
        cfg.load_server(home, {"PENDRA_METRICS_TOKEN": "short"})
    env = {"GPU_WORKER_PRIVATE_KEY": "k"}
    with pytest.raises(ConfigError, match="METRICS_PORT must be between 0 and 65535"):
        cfg.load_worker(home, env | {"METRICS_PORT": "70000"})
    on = cfg.load_worker(home, env | {"METRICS_PORT": "9464", "METRICS_HOST": "0.0.0.0"})
    assert (on.metrics_port, on.metrics_host) == (9464, "0.0.0.0")


def test_the_metrics_token_is_never_printed(tmp_path: Path) -> None:
    """`pendra config set metrics_token …` stores it but prints it hidden, and `config show`
    hides it too."""
    pendra = str(Path(sys.executable).with_name("pendra"))
    env = {**os.environ, "PENDRA_HOME": str(tmp_path / "home")}
    token = "a-long-metrics-token-0123456789"
    done = subprocess.run([pendra, "config", "set", "metrics_token", token], capture_output=True,
                          text=True, timeout=60, env=env, check=True)
    shown = subprocess.run([pendra, "config", "show"], capture_output=True, text=True,
                           timeout=60, env=env | {"COLUMNS": "300"}, check=True)
    assert token not in done.stdout + shown.stdout and "hidden" in done.stdout
    assert "<set, hidden>" in shown.stdout
    assert "600.0" in shown.stdout  # first_token_timeout is no secret for having "token" in it
    done = subprocess.run([pendra, "config", "set", "first_token_timeout", "30"],
                          capture_output=True, text=True, timeout=60, env=env, check=True)
    assert "first_token_timeout = 30.0" in done.stdout
    assert cfg.load_server(Home(tmp_path / "home"), {}).metrics_token == token


@pytest.mark.parametrize("raw", ['{"id": "a"}', "[1]", "not json", '[{"name": "x"}]'])
def test_bad_models_value_names_the_key(tmp_path: Path, raw: str) -> None:
    """A malformed MODELS value stops start-up with an error naming MODELS."""
    with pytest.raises(ConfigError, match="MODELS"):
        cfg.load_worker(Home(tmp_path), {"GPU_WORKER_PRIVATE_KEY": "k", "MODELS": raw})


def test_bad_file_value_names_key_and_file(tmp_path: Path) -> None:
    """An invalid value in config.yaml names the YAML key and the file it came from."""
    home = Home(tmp_path)
    cfg.write_file(home, {"max_concurrent": "lots"})
    with pytest.raises(ConfigError, match=r"max_concurrent in .*config\.yaml"):
        cfg.load_worker(home, {"GPU_WORKER_PRIVATE_KEY": "k"})


def test_worker_id_generated_once_and_persisted(tmp_path: Path) -> None:
    """The first run generates wrk-<hex> and saves it; later runs reuse it."""
    home = Home(tmp_path)
    first = cfg.load_worker(home, {"GPU_WORKER_PRIVATE_KEY": "k"})
    assert re.fullmatch(r"wrk-[0-9a-f]{8}", first.worker_id)
    assert yaml.safe_load(home.config_file.read_text())["worker_id"] == first.worker_id
    assert cfg.load_worker(home, {"GPU_WORKER_PRIVATE_KEY": "k"}).worker_id == first.worker_id


def test_worker_refuses_to_start_without_key(tmp_path: Path) -> None:
    """Without a private key the worker refuses, saying how to get one."""
    with pytest.raises(ConfigError, match="pendra workers add"):
        cfg.load_worker(Home(tmp_path), {})


def test_config_file_is_private(tmp_path: Path) -> None:
    """config.yaml is written 0600, and a wider mode is warned about at start-up."""
    home = Home(tmp_path)
    cfg.set_value(home, "gpu_worker_private_key", "secret")
    assert os.stat(home.config_file).st_mode & 0o777 == 0o600
    os.chmod(home.config_file, 0o644)
    assert cfg.warn_if_open(home) is True
    os.chmod(home.config_file, 0o600)
    assert cfg.warn_if_open(home) is False


def test_wide_config_warns_on_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Loading worker settings from a group-readable config.yaml logs a warning naming chmod."""
    home = Home(tmp_path)
    cfg.write_file(home, {"gpu_worker_private_key": "k"})
    os.chmod(home.config_file, 0o640)
    with caplog.at_level(logging.WARNING):
        cfg.load_worker(home, {})
    assert "chmod 600" in caplog.text


def test_config_set_validates_and_accepts_env_names(tmp_path: Path) -> None:
    """`pendra config set` validates the value and accepts YAML or env names; unknown keys fail."""
    home = Home(tmp_path)
    assert cfg.set_value(home, "MAX_CONCURRENT", "3") == 3
    assert cfg.set_value(home, "models", '["a"]') == ("a",)
    assert cfg.read_file(home) == {"max_concurrent": 3, "models": ["a"]}
    with pytest.raises(ConfigError, match="unknown config key"):
        cfg.set_value(home, "nope", "1")
    with pytest.raises(ConfigError, match="max_concurrent"):
        cfg.set_value(home, "max_concurrent", "x")


def test_ws_url_gets_gpu_path(tmp_path: Path) -> None:
    """/ws/gpu is appended to APP_SERVER_WS_URL, with or without a trailing slash."""
    env = {"GPU_WORKER_PRIVATE_KEY": "k", "APP_SERVER_WS_URL": "wss://cp.example:9000/"}
    assert cfg.load_worker(Home(tmp_path), env).gpu_ws_url == "wss://cp.example:9000/ws/gpu"


def test_server_defaults_to_sqlite_in_home(tmp_path: Path) -> None:
    """Without DATABASE_URL the store is SQLite under PENDRA_HOME."""
    s = cfg.load_server(Home(tmp_path), {})
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path / 'pendra.db'}"
    pg = cfg.load_server(Home(tmp_path), {"DATABASE_URL": "postgresql+asyncpg://u@h/db"})
    assert pg.database_url == "postgresql+asyncpg://u@h/db"


def test_every_key_is_documented() -> None:
    """Each config key appears, by YAML and env name, in docs/configuration.md and the README."""
    docs = (ROOT / "docs" / "configuration.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for key in cfg.KEYS:
        assert f"`{key.yaml_name}`" in docs and f"`{key.env_name}`" in docs, key.yaml_name
        assert key.env_name in readme, key.env_name


def test_every_range_is_documented() -> None:
    """Each bounded key's allowed range appears, as the refusal words it, in docs/configuration.md."""
    docs = (ROOT / "docs" / "configuration.md").read_text()
    for key in cfg.KEYS:
        if key.bounds is not None:
            assert f"| `{key.yaml_name}` | {key.bounds.describe()} |" in docs, key.yaml_name

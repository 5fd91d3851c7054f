"""The one rule for the control plane's public URL (server/public_url.py)."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from pendra import config as cfg
from pendra.home import Home
from pendra.server import public_url
from pendra.server.public_url import public_base


def _settings(tmp_path: Path, **changes: object) -> cfg.ServerSettings:
    return replace(cfg.load_server(Home(tmp_path), {}), **changes)  # type: ignore[arg-type]


def test_configured_public_url_wins(tmp_path: Path) -> None:
    """PUBLIC_URL is used as given (without a trailing slash) whatever the listen address."""
    found = public_base(_settings(tmp_path, host="0.0.0.0", port=8080,
                                  public_url="https://pendra.example.com/"))
    assert (found.url, found.source) == ("https://pendra.example.com", public_url.FROM_CONFIG)
    assert found.ws_url == "wss://pendra.example.com"
    assert found.api_url == "https://pendra.example.com/api/v1"


@pytest.mark.parametrize(("host", "expected"), [("127.0.0.1", "http://127.0.0.1:9000"),
                                                ("::1", "http://[::1]:9000")])
def test_a_specific_listen_address_is_used(tmp_path: Path, host: str, expected: str) -> None:
    """Listening on one address, that address is where others reach the server."""
    found = public_base(_settings(tmp_path, host=host, port=9000))
    assert (found.url, found.source) == (expected, public_url.FROM_LISTEN)


def test_wildcard_becomes_this_machines_address(tmp_path: Path) -> None:
    """For 0.0.0.0 the URL names an address of this machine (one a socket can bind to), never
    0.0.0.0, and says that rule chose it; with no non-loopback address it falls back to loopback
    and says so."""
    found = public_base(_settings(tmp_path, host="0.0.0.0", port=8080))
    host = found.url.removeprefix("http://").rsplit(":", 1)[0]
    assert host != "0.0.0.0" and found.url.endswith(":8080")
    with socket.socket() as probe:
        probe.bind((host, 0))  # an address of this machine
    if found.source == public_url.FROM_MACHINE:
        assert not host.startswith("127.")
    else:
        assert (found.source, host) == (public_url.FROM_LOOPBACK, "127.0.0.1")


def test_no_address_found_falls_back_to_loopback(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """When the machine has no address but loopback, the URL is loopback and says how to fix it."""
    monkeypatch.setattr(public_url, "machine_address", lambda family=socket.AF_INET: None)
    found = public_base(_settings(tmp_path, host="0.0.0.0", port=8080))
    assert found.url == "http://127.0.0.1:8080"
    assert "set PUBLIC_URL" in found.source


def test_local_url_is_loopback_for_a_wildcard() -> None:
    """The local CLI and `pendra up`'s own worker reach a wildcard listener over loopback."""
    assert public_url.local_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert public_url.local_url("::", 8080) == "http://[::1]:8080"
    assert public_url.local_url("10.1.2.3", 8080) == "http://10.1.2.3:8080"

"""The running control plane's local breadcrumb: ``$PENDRA_HOME/server.yaml`` (0600).

Holds the URL the server listens on and a per-start admin token, so CLI commands on the same host
(``pendra status``, ``pendra workers list``) can reach the live server without an API key, and the
public URL the server resolved at start (server/public_url.py), so the commands it prints for other
hosts (``pendra workers add``) match the console's. The token is only as secret as the file, which
is private to the user who runs the server.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import yaml

from pendra.home import Home, write_private


@dataclass(frozen=True)
class ServerState:
    url: str
    admin_token: str
    public_url: str = ""


def new_admin_token() -> str:
    return "pdr_admin_" + secrets.token_urlsafe(24)


def write_server_state(home: Home, url: str, admin_token: str,
                       public_url: str = "") -> ServerState:
    write_private(home.server_state_file, yaml.safe_dump(
        {"url": url, "admin_token": admin_token, "public_url": public_url}))
    return ServerState(url, admin_token, public_url)


def read_server_state(home: Home) -> ServerState | None:
    try:
        data = yaml.safe_load(home.server_state_file.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return None
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or not data.get("url") or not data.get("admin_token"):
        return None
    return ServerState(str(data["url"]), str(data["admin_token"]),
                       str(data.get("public_url") or ""))


def clear_server_state(home: Home) -> None:
    home.server_state_file.unlink(missing_ok=True)

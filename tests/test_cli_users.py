"""`pendra users`, `pendra keys create --user` and `pendra audit` on the control-plane host, as
real processes writing the store (no server running)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PENDRA = str(Path(sys.executable).with_name("pendra"))


def _pendra(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PENDRA, *args], capture_output=True, text=True, timeout=60, input=stdin,
                          env={**os.environ, "PENDRA_HOME": str(home), "COLUMNS": "300"})


def _json(home: Path, *args: str) -> list[dict[str, object]]:
    result = _pendra(home, *args, "--json")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def test_users_keys_and_audit_from_the_cli(tmp_path: Path) -> None:
    """Invite (one-time password printed once), list, make a key for someone, disable (their key is
    revoked), enable, change the role, remove (their keys go to the first owner), and the audit
    log lists each change with `cli` as who; the last owner cannot be disabled."""
    owner = _pendra(tmp_path, "admin", "reset-password", "--password-stdin",
                    stdin="the owner's password\n")
    assert owner.returncode == 0, owner.stderr
    added = _pendra(tmp_path, "users", "add", "ada@example.com", "--role", "member")
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert "Added ada@example.com (member" in lines[0] and len(lines[1].strip()) == 16
    users = {u["name"]: u for u in _json(tmp_path, "users", "list")}
    assert users["admin"]["role"] == "owner" and users["ada@example.com"]["must_change_password"]

    key = _pendra(tmp_path, "keys", "create", "--name", "ada's laptop", "--user", "ada@example.com")
    assert key.returncode == 0, key.stderr
    [listed] = _json(tmp_path, "keys", "list")
    assert listed["user"] == "ada@example.com" and listed["revoked_at"] is None

    disabled = _pendra(tmp_path, "users", "disable", "ada@example.com")
    assert disabled.returncode == 0 and "1 API key(s) revoked" in disabled.stdout
    [listed] = _json(tmp_path, "keys", "list")
    assert listed["revoked_at"] is not None
    assert _pendra(tmp_path, "users", "enable", "ada@example.com").returncode == 0
    role = _pendra(tmp_path, "users", "role", "ada@example.com", "owner")
    assert role.returncode == 0 and "is now an owner" in role.stdout
    removed = _pendra(tmp_path, "users", "remove", "ada@example.com")
    assert removed.returncode == 0, removed.stderr
    [listed] = _json(tmp_path, "keys", "list")
    assert listed["user"] == "admin"

    refused = _pendra(tmp_path, "users", "disable", "admin")
    assert refused.returncode != 0 and "last owner" in (refused.stdout + refused.stderr)
    unknown = _pendra(tmp_path, "users", "add", "x", "--role", "boss")
    assert unknown.returncode != 0 and "role" in (unknown.stdout + unknown.stderr)

    rows = _json(tmp_path, "audit", "--since", "1h")
    assert [r["action"] for r in reversed(rows)] == [
        "user.password_reset", "user.added", "key.created", "user.disabled", "user.enabled",
        "user.role_changed", "user.removed"]
    assert {r["actor"] for r in rows} == {"cli"}
    assert all("password" not in str(r["detail"]).lower() for r in rows)

"""`pendra admin reset-password`, run as a real process against a live control plane's store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import PASSWORD, Console, SignedIn, sign_in

PENDRA = str(Path(sys.executable).with_name("pendra"))
NEW_PASSWORD = "a brand new admin password"


def reset_password(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([PENDRA, "admin", "reset-password", *args], input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PENDRA_HOME": str(home)})


async def test_reset_password_from_stdin_ends_sessions_and_the_new_one_signs_in(
        console: Console, admin: SignedIn) -> None:
    """With the server running, the command sets the password read from stdin (never echoing it);
    the signed-in session ends at once, the old password is refused and the new one works."""
    done = reset_password(console.settings.home.root, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert NEW_PASSWORD not in done.stdout + done.stderr
    assert (await admin.http.get("/account")).status_code == 303
    async with httpx.AsyncClient(base_url=console.base_url) as http:
        assert (await http.post("/sign-in", data={"name": "admin", "password": PASSWORD})).status_code == 401
        await sign_in(http, NEW_PASSWORD)


async def test_reset_password_generates_and_prints_one(console: Console) -> None:
    """Without --password-stdin a password is generated and printed once; it signs in. A password
    too short is refused with the store's message and changes nothing."""
    short = reset_password(console.settings.home.root, "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "InvalidRequest" in short.stderr
    done = reset_password(console.settings.home.root)
    assert done.returncode == 0, done.stderr
    generated = done.stdout.strip().splitlines()[-1]
    assert len(generated) >= 16
    async with httpx.AsyncClient(base_url=console.base_url) as http:
        await sign_in(http, generated)

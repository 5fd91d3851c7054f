"""Enrolment and first start, as services without HTTP: the key pair, the store row, the command
line (quoted for a real shell), and the first-start secrets made exactly once."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pendra.errors import Conflict, InvalidRequest
from pendra.protocol import signing
from pendra.server.enrolment import (Enrolment, enrol_worker, ensure_enrolled, worker_command,
                                     worker_ws_url)
from pendra.server.first_start import FIRST_KEY_NAME, first_start
from pendra.server.store import admin as admin_store
from pendra.server.store import keys as key_store
from pendra.server.store import workers as worker_store
from pendra.server.store.db import Store

ENV_KEYS = ("GPU_WORKER_PRIVATE_KEY", "WORKER_ID", "WORKER_NAME", "APP_SERVER_WS_URL")
# Names a person may type that a naive quoting breaks: quotes, spaces, shell syntax.
ODD_NAMES = ["O'Brien's GPU", 'the "big" box', "$HOME `id` ; rm -rf / #", "a\\b", "  gpu  -1  ",
             "ünïcødé 显卡"]
# What the shell runs instead of `pendra worker`: prints the environment the worker would get.
SHOW_ENV = (f"{shlex.quote(sys.executable)} -c "
            + shlex.quote(f"import json, os; print(json.dumps({{k: os.environ.get(k) "
                          f"for k in {list(ENV_KEYS)!r}}}))"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'pendra.db'}")
    try:
        yield opened
    finally:
        await opened.close()


def run_in_shell(command: str) -> dict[str, str]:
    """Run ``command`` in /bin/sh with `pendra worker` swapped for a printer of its environment."""
    assert command.endswith(" pendra worker")
    line = command.removesuffix("pendra worker") + SHOW_ENV
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=30,
                          check=True)
    shown: dict[str, str] = json.loads(done.stdout)
    return shown


@pytest.mark.parametrize("name", ODD_NAMES)
def test_worker_command_gives_a_real_shell_exactly_the_values(name: str) -> None:
    """Whatever the name holds, a POSIX shell running the printed line hands the worker exactly
    the key, id, name and URL (the CLI's hand-made single quotes broke on an apostrophe)."""
    private_key, _ = signing.generate_keypair()
    enrolled = Enrolment("wrk-0123abcd", name, private_key)
    url = "wss://control plane:8443/x?a=1&b=2"
    command = worker_command(enrolled, url)
    assert run_in_shell(command) == {"GPU_WORKER_PRIVATE_KEY": private_key,
                                     "WORKER_ID": "wrk-0123abcd", "WORKER_NAME": name,
                                     "APP_SERVER_WS_URL": url}
    assert shlex.split(command)[-2:] == ["pendra", "worker"]


def test_worker_ws_url_follows_the_scheme() -> None:
    """http → ws and https → wss, with no trailing slash."""
    assert worker_ws_url("http://127.0.0.1:8080/") == "ws://127.0.0.1:8080"
    assert worker_ws_url("https://pendra.example") == "wss://pendra.example"


async def test_enrol_worker_stores_only_the_public_half(store: Store) -> None:
    """A new key pair per worker: the store holds the public key of the private key returned;
    a taken or unprintable name is refused by the store's rules."""
    async with store.session() as session:
        first = await enrol_worker(session, "gpu one")
        second = await enrol_worker(session, "gpu two")
        await session.commit()
    assert first.private_key != second.private_key
    async with store.session() as session:
        row = await worker_store.get_worker(session, first.worker_id)
        assert row is not None and row.name == "gpu one"
        assert row.public_key == signing.public_key_of(first.private_key)
        assert first.private_key not in {row.public_key, row.name, row.id}
        with pytest.raises(Conflict):
            await enrol_worker(session, "gpu one")
        with pytest.raises(InvalidRequest):
            await enrol_worker(session, "bell\x07")


async def test_ensure_enrolled_keeps_renews_and_renames(store: Store) -> None:
    """The local worker: no key → a new pair; the same key again → unchanged; a new key →
    re-enrolled under the same id; a name another worker holds → "<name> (local)"."""
    async with store.session() as session:
        made = await ensure_enrolled(session, "wrk-aaaaaaaa", "box", None)
        await session.commit()
    assert made.worker_id == "wrk-aaaaaaaa" and made.name == "box"
    async with store.session() as session:
        again = await ensure_enrolled(session, "wrk-aaaaaaaa", "renamed", made.private_key)
        await session.commit()
    assert again == made, "a matching enrolment is kept as it is"
    new_key, _ = signing.generate_keypair()
    async with store.session() as session:
        renewed = await ensure_enrolled(session, "wrk-aaaaaaaa", "box", new_key)
        await session.commit()
        row = await worker_store.get_worker(session, "wrk-aaaaaaaa")
    assert renewed == Enrolment("wrk-aaaaaaaa", "box", new_key)
    assert row is not None and row.public_key == signing.public_key_of(new_key)
    async with store.session() as session:
        other = await ensure_enrolled(session, "wrk-bbbbbbbb", "box", None)
        await session.commit()
    assert other.name == "box (local)"


async def test_first_start_happens_once(store: Store) -> None:
    """The first call makes the admin password and one API key; every later call makes nothing."""
    first = await first_start(store)
    assert first is not None
    assert await first_start(store) is None
    assert await first_start(store) is None
    async with store.session() as session:
        keys = await key_store.list_keys(session)
        stored = await admin_store.stored_hash(session)
        assert [k.name for k in keys] == [FIRST_KEY_NAME]
        assert await key_store.authenticate(session, first.api_key) is not None
    assert stored is not None and await admin_store.verify_password(first.admin_password, stored)
    lines: list[str] = []
    first.announce(lines.append)
    assert any(first.admin_password in line for line in lines)
    assert any(first.api_key in line for line in lines)

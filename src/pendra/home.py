"""Where a Pendra process keeps its state: ``PENDRA_HOME`` (default ``~/.pendra``).

Owns the paths (config file, database, worker identity) and the one way to write a secret-bearing
file: atomically, with mode 0600, never readable by others even for an instant.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping

CONFIG_FILE = "config.yaml"
DATABASE_FILE = "pendra.db"
SERVER_STATE_FILE = "server.yaml"


@dataclass(frozen=True)
class Home:
    """The PENDRA_HOME folder of one process."""

    root: Path

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None) -> "Home":
        env = os.environ if environ is None else environ
        raw = env.get("PENDRA_HOME") or "~/.pendra"
        return cls(Path(raw).expanduser())

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def database_file(self) -> Path:
        return self.root / DATABASE_FILE

    @property
    def server_state_file(self) -> Path:
        return self.root / SERVER_STATE_FILE

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (the file may hold a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def too_open(path: Path) -> bool:
    """True when group or others may read or write ``path`` (we want 0600)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))

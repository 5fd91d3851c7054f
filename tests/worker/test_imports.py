"""What a worker host loads: ``pendra worker`` (the CLI and ``pendra.worker.daemon``, which import
every module the worker runs; nothing is imported later) needs none of the control plane's
libraries, so a worker's memory holds no web framework, ORM or template engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# The control plane's libraries (and its own package): a worker must not load any of them.
SERVER_ONLY = ("fastapi", "starlette", "sqlalchemy", "jinja2", "uvicorn", "alembic", "aiosqlite",
               "asyncpg", "pendra.server")
PROBE = """
import json, sys
import pendra.cli
from pendra.worker.daemon import run_worker
print(json.dumps(sorted(sys.modules)))
"""


def test_the_worker_imports_none_of_the_control_planes_libraries() -> None:
    """Importing what ``pendra worker`` runs, in a fresh interpreter, loads no module of fastapi,
    starlette, sqlalchemy, jinja2, uvicorn, alembic, the database drivers or pendra.server."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert "pendra.worker.daemon" in loaded
    offending = [m for m in loaded if any(m == p or m.startswith(p + ".") for p in SERVER_ONLY)]
    assert offending == []

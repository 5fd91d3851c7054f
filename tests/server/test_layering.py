"""The server's layering, checked on its source: routes get their state through deps.py, and
the core does not depend on the console."""

from __future__ import annotations

import ast
from pathlib import Path

import pendra.server

SERVER = Path(pendra.server.__file__).parent
SRC = SERVER.parent
# The only modules that may touch app.state: the factory that fills it and the dependencies.
STATE_OWNERS = {SERVER / "app.py", SERVER / "deps.py"}
CONSOLE = SERVER / "console"


def modules(root: Path) -> list[Path]:
    found = sorted(root.rglob("*.py"))
    assert found, root
    return found


def reaches_into_the_app(tree: ast.AST) -> list[int]:
    """Lines reading ``<x>.app`` (``request.app``, ``websocket.app``; an ASGI middleware's own
    ``self.app`` is the app it wraps, not state) or ``app.state``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "app" \
                and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "state" \
                and isinstance(node.value, ast.Name) and node.value.id == "app":
            lines.append(node.lineno)
    return lines


def console_imports(tree: ast.AST) -> list[int]:
    """Lines importing ``pendra.server.console`` or anything under it."""
    lines = []
    for node in ast.walk(tree):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == "pendra.server.console" or n.startswith("pendra.server.console.")
               for n in names):
            lines.append(node.lineno)
    return lines


def test_only_app_and_deps_touch_app_state() -> None:
    """No module under pendra/server but app.py and deps.py reads ``request.app`` or
    ``app.state``: every route declares its dependencies (deps.py's Annotated aliases)."""
    offenders = {}
    for path in modules(SERVER):
        if path in STATE_OWNERS:
            continue
        lines = reaches_into_the_app(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            offenders[str(path.relative_to(SRC))] = lines
    assert offenders == {}


def test_nothing_outside_the_console_imports_it() -> None:
    """Only app.py (which installs the console) imports from pendra.server.console: sessions,
    CSRF, the throttle and usage queries are the server's, the console has only its pages."""
    offenders = {}
    for path in modules(SRC):
        if path.is_relative_to(CONSOLE) or path == SERVER / "app.py":
            continue
        lines = console_imports(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            offenders[str(path.relative_to(SRC))] = lines
    assert offenders == {}


def test_the_console_runs_no_sql() -> None:
    """The console builds no queries: aggregates and lists come from the store's modules."""
    offenders = []
    for path in modules(CONSOLE):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []

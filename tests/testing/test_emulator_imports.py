"""The Ollama emulator states Ollama's facts itself: it imports nothing from the Pendra code it is
used to check (issue 10: a wrong version gate in the backend once passed every test)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pendra

SRC = Path(pendra.__file__).parent.parent


def _imports(module: str) -> set[str]:
    """Every module ``module``'s source imports (``from a import b`` counts ``a.b`` when it is one)."""
    path = SRC / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("entry, reaches", [
    ("pendra.testing.ollama_emulator", ("pendra.testing.ollama.facts",
                                        "pendra.testing.ollama.inference")),
    ("pendra.testing.openai_compat.app", ("pendra.testing.openai_compat.facts_vllm",
                                          "pendra.testing.openai_compat.facts_lmstudio",
                                          "pendra.testing.openai_compat.core")),
])
def test_emulator_imports_nothing_it_checks(entry: str, reaches: tuple[str, ...]) -> None:
    """Each emulator and every pendra.testing module it reaches import no Pendra code outside
    pendra.testing: a wrong constant in the backend cannot make the emulator agree with it."""
    seen: set[str] = set()
    todo = [entry]
    outside: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imports(module):
            if name.startswith("pendra.testing."):
                base = SRC / name.replace(".", "/")
                if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
                    todo.append(name)
            elif name == "pendra" or name.startswith("pendra."):
                outside.add(f"{module} imports {name}")
    assert set(reaches) <= seen
    assert outside == set()


def test_speaches_emulator_imports_nothing_it_checks() -> None:
    """The same for the Speaches emulator (and its impostor)."""
    seen: set[str] = set()
    todo = ["pendra.testing.speaches_emulator"]
    outside: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imports(module):
            if name.startswith("pendra.testing."):
                base = SRC / name.replace(".", "/")
                if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
                    todo.append(name)
            elif name == "pendra" or name.startswith("pendra."):
                outside.add(f"{module} imports {name}")
    assert {"pendra.testing.speaches.facts", "pendra.testing.speaches.impostor"} <= seen
    assert outside == set()

"""Ollama's model ``options`` (reference: Ollama's ``api.Options`` and ``api.Runner``): the one
table of their types and ranges.

The control plane builds its request schema from ``OPTIONS`` (so a client's ``options.num_ctx: -1``
is refused at the edge with 400 naming it), and the worker checks them again with
``check_options`` before anything is forwarded (defence in depth: a wrong type never reaches
Ollama). Keys Ollama does not know pass through: Ollama ignores them with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pendra.errors import InvalidRequest

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class OptionSpec:
    """One option: its JSON type (int, float, bool, or a list of strings) and inclusive range."""

    kind: type | str  # int, float, bool, or "stops"
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""


OPTIONS: dict[str, OptionSpec] = {
    "num_ctx": OptionSpec(int, 1, INT32_MAX, "Context window in tokens"),
    "num_predict": OptionSpec(int, -2, INT32_MAX, "Tokens to generate (-1 unbounded, -2 fill)"),
    "num_keep": OptionSpec(int, -1, INT32_MAX),
    "num_batch": OptionSpec(int, 1, INT32_MAX),
    "num_gpu": OptionSpec(int, -1, INT32_MAX),
    "main_gpu": OptionSpec(int, 0, INT32_MAX),
    "num_thread": OptionSpec(int, 0, INT32_MAX),
    "seed": OptionSpec(int, INT64_MIN, INT64_MAX),
    "top_k": OptionSpec(int, 0, INT32_MAX),
    "top_p": OptionSpec(float, 0, 1),
    "min_p": OptionSpec(float, 0, 1),
    "typical_p": OptionSpec(float, 0, 1),
    "repeat_last_n": OptionSpec(int, -1, INT32_MAX),
    "temperature": OptionSpec(float, 0, None),
    "repeat_penalty": OptionSpec(float, 0, None),
    "presence_penalty": OptionSpec(float),
    "frequency_penalty": OptionSpec(float),
    "mirostat": OptionSpec(int, 0, 2),
    "mirostat_tau": OptionSpec(float, 0, None),
    "mirostat_eta": OptionSpec(float, 0, None),
    "penalize_newline": OptionSpec(bool),
    "use_mmap": OptionSpec(bool),
    "numa": OptionSpec(bool),
    "stop": OptionSpec("stops", description="Stop sequences"),
}


def _fits(value: Any, spec: OptionSpec) -> bool:
    if spec.kind == "stops":
        return isinstance(value, list) and all(isinstance(s, str) for s in value)
    if spec.kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if spec.kind is int and not isinstance(value, int):
        return False
    return ((spec.minimum is None or value >= spec.minimum)
            and (spec.maximum is None or value <= spec.maximum))


def _expected(spec: OptionSpec) -> str:
    if spec.kind == "stops":
        return "a list of strings"
    names: dict[object, str] = {int: "an integer", float: "a number", bool: "true or false"}
    name = names[spec.kind]
    if spec.minimum is not None and spec.maximum is not None:
        return f"{name} from {spec.minimum:g} to {spec.maximum:g}"
    if spec.minimum is not None:
        return f"{name} of at least {spec.minimum:g}"
    return name


def check_options(options: Any, where: str = "options") -> dict[str, Any]:
    """``options`` if every known key has its type and range; InvalidRequest naming the key."""
    if not isinstance(options, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    for key, value in options.items():
        spec = OPTIONS.get(key)
        if spec is not None and value is not None and not _fits(value, spec):
            raise InvalidRequest(f"{where}.{key} must be {_expected(spec)}",
                                 param=f"{where}.{key}")
    return {k: v for k, v in options.items() if v is not None}

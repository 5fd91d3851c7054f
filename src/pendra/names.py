"""Model names: the one rule for when two names mean the same model.

Rules (Ollama's, reference/ollama-api.md "Model names"):
- A name is ``[host/][namespace/]model[:tag]``; the default host is ``registry.ollama.ai``, the
  default namespace ``library`` and the default tag ``latest``. A ``:`` before the last ``/`` is a
  host's port, not a tag.
- Names compare case-insensitively, with the defaults filled in: ``Llama3.2``,
  ``llama3.2:latest``, ``library/llama3.2`` and ``registry.ollama.ai/library/llama3.2:latest`` are
  one model; ``x/z-image-turbo`` is ``x/z-image-turbo:latest`` (namespace ``x``), not a library
  model. ``name_key`` gives the form names are compared in (lower case, the shortest display form
  Ollama lists: default host and namespace dropped, the tag always present).
- The control plane resolves what a client typed to the id a worker serves (``match``: the exact
  id when one is served, else the served id with the same key) and sends workers that id; a worker
  serves exactly the id it is given. The worker's ``MODELS`` setting is matched with the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


def name_key(name: str) -> str:
    """The form names compare in: ``Library/Llama3.2`` → ``llama3.2:latest``."""
    name = name.lower()
    path, _, last = name.rpartition("/")
    if ":" not in last:
        last = f"{last}:{DEFAULT_TAG}"
    parts = path.split("/") if path else []
    if len(parts) >= 2 and parts[0] == DEFAULT_HOST:
        parts = parts[1:]
    if len(parts) == 1 and parts[0] == DEFAULT_NAMESPACE:
        parts = []
    return "/".join([*parts, last])


def match(name: str, ids: Iterable[str]) -> str | None:
    """The id in ``ids`` that ``name`` means: ``name`` itself when it is one of them, else the
    (alphabetically first) id with the same ``name_key``; None when none does."""
    key = name_key(name)
    found: str | None = None
    for candidate in ids:
        if candidate == name:
            return candidate
        if name_key(candidate) == key and (found is None or candidate < found):
            found = candidate
    return found

"""What a catalogue variant can be installed into, and from what: the one rule for every caller.

Rules:
- An entry's ``backend`` names the backend kinds it may go into (``BACKEND_KINDS``): ``ollama``
  → Ollama, ``pendra`` → Pendra's built-in GGUF runtime, ``both`` → either, ``speaches`` →
  Speaches (from the variant's ``speaches`` id, a Hugging Face repository). Any entry may also go
  into LM Studio, through those of its variants that name what LM Studio downloads (``lmstudio``:
  an LM Studio catalog id, or a Hugging Face link with ``@<quantization>``). vLLM and the generic
  OpenAI-compatible servers install nothing: they serve what they were started with.
- Each kind installs a variant from its own source (``SOURCES``): Ollama from the variant's
  ``ollama`` tag, the built-in runtime from its ``gguf_url``. A variant without that source is not
  installable into that kind.
- ``install_source`` is the check (``pendra models install``, the installs service); the console
  asks ``installable_into`` (some variant passes it). A new backend kind joins by adding a row to
  both tables.
"""

from __future__ import annotations

from collections.abc import Callable

from pendra.catalogue.loader import CatalogueEntry, Variant
from pendra.errors import InvalidRequest

# The backend kinds (as workers report them) each catalogue ``backend`` value may install into.
BACKEND_KINDS: dict[str, frozenset[str]] = {
    "ollama": frozenset({"ollama"}),
    "pendra": frozenset({"pendra"}),
    "both": frozenset({"ollama", "pendra"}),
    "speaches": frozenset({"speaches"}),
}
# Kinds any entry may install into, variant by variant, whatever its ``backend``.
EVERY_ENTRY = frozenset({"lmstudio"})
# The order a worker's backends are offered in when an install names no backend.
PREFERENCE = ("ollama", "pendra", "lmstudio", "speaches")
# Per backend kind: what it installs a variant from, and how a message names the kind and source.
SOURCES: dict[str, tuple[Callable[[Variant], str | None], str, str]] = {
    "ollama": (lambda variant: variant.ollama, "Ollama", "Ollama tag"),
    "pendra": (lambda variant: variant.gguf_url, "Pendra's built-in runtime", "GGUF file"),
    "speaches": (lambda variant: variant.speaches, "Speaches", "Speaches model id"),
    "lmstudio": (lambda variant: variant.lmstudio, "LM Studio", "LM Studio download id"),
}


def default_kind(entry: CatalogueEntry) -> str:
    """The backend kind an install of ``entry`` goes to when none is chosen and the worker has
    none that takes it: Speaches for a ``speaches`` entry, else Ollama."""
    return "speaches" if entry.backend == "speaches" else "ollama"


def kinds_for(entry: CatalogueEntry) -> frozenset[str]:
    """The backend kinds ``entry`` is catalogued for."""
    return BACKEND_KINDS.get(entry.backend, frozenset()) | EVERY_ENTRY


def install_source(entry: CatalogueEntry, variant: Variant, kind: str) -> str:
    """What a ``kind`` backend installs ``variant`` of ``entry`` from (Ollama: the tag to pull).

    ``InvalidRequest`` naming the reason when the entry is not catalogued for ``kind`` or the
    variant has no source for it.
    """
    source, label, what = SOURCES.get(kind, (lambda _variant: None, kind, "source"))
    if kind not in kinds_for(entry) or kind not in SOURCES:
        raise InvalidRequest(f"'{entry.id}' is catalogued for the {entry.backend} backend and "
                             f"cannot be installed into {label}")
    found = source(variant)
    if not found:
        if not any(source(other) for other in entry.variants):
            raise InvalidRequest(f"'{entry.id}' cannot be installed into {label}: none of its "
                                 f"variants has a {what}")
        raise InvalidRequest(f"variant '{variant.id}' of '{entry.id}' has no {what}")
    return found


def installable_kinds(entry: CatalogueEntry) -> list[str]:
    """Every kind some variant of ``entry`` installs into, in ``PREFERENCE`` order."""
    return [kind for kind in PREFERENCE if installable_into(entry, kind)]


def installable_into(entry: CatalogueEntry, kind: str) -> bool:
    """Whether some variant of ``entry`` can be installed into a ``kind`` backend."""
    for variant in entry.variants:
        try:
            install_source(entry, variant, kind)
        except InvalidRequest:
            continue
        return True
    return False

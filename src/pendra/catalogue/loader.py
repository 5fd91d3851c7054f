"""Loads and validates ``catalogue.yaml`` once per process; resolves what a user typed to an entry.

Rules:
- Validation happens at load and refuses the whole file on the first problem, naming the entry and
  the field: unknown keys, unknown enums (backend, capability, features), duplicate entry ids,
  duplicate variant ids, a name that means two models (an alias or Ollama tag shared by two entries).
- A variant has an ``ollama`` tag, or ``gguf_url`` + ``gguf_sha256`` (both or neither), or both;
  or, in a ``speaches`` entry, only a ``speaches`` id (the Hugging Face repository Speaches
  downloads, also a name the entry is found by); any variant may also name what LM Studio downloads
  (``lmstudio``). ``backend`` must agree: an ``ollama`` entry has only tagged variants, a
  ``pendra`` entry only GGUF ones, ``both`` has some of each. The first variant is the default.
  What can be installed where
  is installable.py's rule.
- Names compare by ``pendra.names.name_key`` (Ollama's rule: case-insensitively, with ``:latest``
  and the ``library`` namespace implied: ``All-MiniLM`` == ``all-minilm:latest``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pendra.errors import ConfigError
from pendra.names import name_key

Backend = Literal["ollama", "pendra", "both", "speaches"]
# The same vocabulary as GET /api/v1/models?type= (ModelInfo.types).
Capability = Literal["chat", "embedding", "image", "transcription", "ocr"]
Feature = Literal["tools", "thinking", "vision", "code"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Variant(BaseModel):
    """One size or quantisation of a catalogue model, and where it installs from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=100)
    quantization: str = Field(min_length=1)
    size_bytes: int = Field(gt=0, description="Download size in bytes")
    ollama: str | None = Field(default=None, min_length=1, description="Ollama tag")
    gguf_url: str | None = Field(default=None, pattern=r"^https://")
    # What LM Studio's download API fetches: a model-catalog identifier ("qwen/qwen3-8b") or a
    # Hugging Face link, optionally "@<quantization>" (installable.py says how it is sent).
    lmstudio: str | None = Field(default=None, min_length=1, max_length=200)  # the installs row
    gguf_sha256: str | None = None
    speaches: str | None = Field(default=None, min_length=1, max_length=256,
                                 pattern=r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$",
                                 description="Speaches model id (a Hugging Face repository)")

    @field_validator("gguf_sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError("must be 64 lower-case hex characters")
        return value

    @model_validator(mode="after")
    def _has_a_source(self) -> "Variant":
        if (self.gguf_url is None) != (self.gguf_sha256 is None):
            raise ValueError("gguf_url and gguf_sha256 go together")
        if (self.ollama is None and self.gguf_url is None and self.speaches is None
                and self.lmstudio is None):
            raise ValueError("a variant needs an `ollama` tag, a `gguf_url`, a `speaches` id or "
                             "an `lmstudio` id")
        return self

    @property
    def tag(self) -> str | None:
        return self.ollama

    @property
    def has_gguf(self) -> bool:
        return self.gguf_url is not None


class CatalogueEntry(BaseModel):
    """One curated model: its facts and its variants (the first is the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1)
    backend: Backend
    capability: Capability
    features: tuple[Feature, ...] = ()
    parameter_size: str
    context_length: int | None = Field(ge=1)
    licence: str = Field(min_length=1)
    description: str = Field(min_length=1)
    aliases: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _variants_fit_backend(self) -> "CatalogueEntry":
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate variant ids in {ids}")
        tagged = [v for v in self.variants if v.ollama]
        gguf = [v for v in self.variants if v.has_gguf]
        if self.backend == "ollama" and len(tagged) != len(self.variants):
            raise ValueError("every variant of an `ollama` entry needs an `ollama` tag")
        if self.backend == "pendra" and (tagged or len(gguf) != len(self.variants)):
            raise ValueError("every variant of a `pendra` entry is a GGUF file with no `ollama` tag")
        if self.backend == "both" and not (tagged and gguf):
            raise ValueError("a `both` entry needs at least one Ollama tag and one GGUF variant")
        speaches = [v for v in self.variants if v.speaches]
        if self.backend != "speaches" and speaches:
            raise ValueError("`speaches` ids belong to `speaches` entries only")
        if self.backend == "speaches" and (tagged or gguf or len(speaches) != len(self.variants)):
            raise ValueError("every variant of a `speaches` entry has a `speaches` id and nothing "
                             "else")
        return self

    def names(self) -> set[str]:
        """Every name that means this model, in ``name_key`` form."""
        found = {name_key(self.id), *(name_key(a) for a in self.aliases)}
        found.update(name_key(v.ollama) for v in self.variants if v.ollama)
        found.update(name_key(v.speaches) for v in self.variants if v.speaches)
        return found

    def public(self) -> dict[str, Any]:
        """The JSON of ``GET /api/v1/catalogue`` for this entry."""
        return self.model_dump(mode="json", exclude_none=True)


class Catalogue:
    """The validated catalogue: look entries up by id, alias, ``id:variant`` or Ollama tag."""

    def __init__(self, entries: list[CatalogueEntry]) -> None:
        self.entries = tuple(entries)
        self._by_id: dict[str, CatalogueEntry] = {}
        self._by_name: dict[str, tuple[CatalogueEntry, Variant | None]] = {}
        for entry in entries:
            if entry.id in self._by_id:
                raise ConfigError(f"catalogue: duplicate id '{entry.id}'")
            self._by_id[entry.id] = entry
        for entry in entries:
            self._index(entry, name_key(entry.id), None)
            for alias in entry.aliases:
                self._index(entry, name_key(alias), None)
            for variant in entry.variants:
                for name in (variant.ollama, variant.speaches):
                    if name:
                        self._index(entry, name_key(name), variant)

    def _index(self, entry: CatalogueEntry, name: str, variant: Variant | None) -> None:
        seen = self._by_name.get(name)
        if seen is not None and seen[0].id != entry.id:
            raise ConfigError(f"catalogue: '{name}' names both '{seen[0].id}' and '{entry.id}'")
        if seen is None or (seen[1] is None and variant is not None):
            self._by_name[name] = (entry, variant)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, entry_id: str) -> CatalogueEntry | None:
        return self._by_id.get(entry_id)

    def find(self, model_or_tag: str) -> CatalogueEntry | None:
        """The entry that ``model_or_tag`` names (id, alias or any variant's Ollama tag), or None."""
        hit = self._by_name.get(name_key(model_or_tag))
        return hit[0] if hit else None

    def resolve(self, model: str,
                variant: str | None = None) -> tuple[CatalogueEntry | None, Variant | None]:
        """What a user typed → (entry, variant).

        ``model`` is an id or alias (with ``variant``, or the default variant), ``id:variant``, or a
        variant's Ollama tag (that variant unless ``variant`` says otherwise). An unknown model
        gives ``(None, None)``; a known model with an unknown variant gives ``(entry, None)``.
        """
        entry = self._by_id.get(model)
        if entry is None and ":" in model:
            head, _, tail = model.rpartition(":")
            parent = self._by_id.get(head)
            if parent is not None and any(v.id == tail for v in parent.variants):
                entry, variant = parent, variant or tail
        chosen: Variant | None = None
        if entry is None:
            hit = self._by_name.get(name_key(model))
            if hit is None:
                return None, None
            entry, chosen = hit
        if variant is not None:
            return entry, next((v for v in entry.variants if v.id == variant), None)
        return entry, chosen or entry.variants[0]

    def public(self) -> list[dict[str, Any]]:
        return [entry.public() for entry in self.entries]


def _entry(item: Any, index: int, source: str) -> CatalogueEntry:
    try:
        return CatalogueEntry.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = item.get("id", "?") if isinstance(item, dict) else "?"
        field = ".".join(str(p) for p in first.get("loc", ())) or "entry"
        raise ConfigError(f"{source}: models[{index}] ('{name}'): {field}: {first.get('msg')}") \
            from exc


def parse_catalogue(text: str, source: str = "catalogue.yaml") -> Catalogue:
    """Validate catalogue YAML; ConfigError names the file, the entry and the field at fault."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ConfigError(f"{source} must be a mapping with a `models` list")
    entries = [_entry(item, i, source) for i, item in enumerate(data["models"])]
    try:
        return Catalogue(entries)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}") from exc


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The catalogue shipped with Pendra (cached per process), or the one at ``path``."""
    if path is not None:
        return parse_catalogue(path.read_text(encoding="utf-8"), str(path))
    return _shipped()


@lru_cache(maxsize=1)
def _shipped() -> Catalogue:
    text = resources.files("pendra.catalogue").joinpath("catalogue.yaml").read_text(
        encoding="utf-8")
    return parse_catalogue(text)

"""The installable rule (catalogue/installable.py), over the shipped catalogue."""

from __future__ import annotations

import pytest

from pendra.catalogue.installable import default_kind, install_source, installable_into
from pendra.catalogue.loader import Catalogue, CatalogueEntry, Variant, load_catalogue
from pendra.errors import InvalidRequest


@pytest.fixture
def catalogue() -> Catalogue:
    return load_catalogue()


def _pick(catalogue: Catalogue, model: str, variant: str | None = None) -> tuple[CatalogueEntry,
                                                                                   Variant]:
    entry, chosen = catalogue.resolve(model, variant)
    assert entry is not None and chosen is not None
    return entry, chosen


def test_an_ollama_entry_installs_into_ollama_from_its_tag(catalogue: Catalogue) -> None:
    """Every variant of an ``ollama`` entry installs into Ollama from its tag, whatever name the
    user typed for it (case, ``:latest``, an alias)."""
    for typed in ("llama3.2:3b", "Llama3.2", "llama3.2:LATEST", "library/llama3.2"):
        entry, variant = _pick(catalogue, typed)
        assert install_source(entry, variant, "ollama") == "llama3.2:3b"
    entry, variant = _pick(catalogue, "llama3.2:3b", "q8_0")
    assert install_source(entry, variant, "ollama") == "llama3.2:3b-instruct-q8_0"
    assert installable_into(entry, "ollama") and not installable_into(entry, "pendra")


def test_a_pendra_entry_is_not_installable_into_ollama(catalogue: Catalogue) -> None:
    """A GGUF-only entry is refused for Ollama, naming where it is catalogued; it does install into
    the built-in runtime, from its GGUF file."""
    entry, variant = _pick(catalogue, "qwen2.5:1.5b-gguf")
    with pytest.raises(InvalidRequest, match="catalogued for the pendra backend and cannot be "
                                             "installed into Ollama"):
        install_source(entry, variant, "ollama")
    assert not installable_into(entry, "ollama") and installable_into(entry, "pendra")
    assert install_source(entry, variant, "pendra") == variant.gguf_url


def test_a_both_entry_checks_each_variant_for_the_kinds_source(catalogue: Catalogue) -> None:
    """In a ``both`` entry, a tagged variant goes into Ollama and a GGUF one does not."""
    entry, tagged = _pick(catalogue, "qwen2.5:0.5b")
    assert install_source(entry, tagged, "ollama") == "qwen2.5:0.5b"
    _, gguf = _pick(catalogue, "qwen2.5:0.5b", "gguf-q4_K_M")
    with pytest.raises(InvalidRequest, match="variant 'gguf-q4_K_M' of 'qwen2.5:0.5b' has no "
                                             "Ollama tag"):
        install_source(entry, gguf, "ollama")
    assert install_source(entry, gguf, "pendra") == gguf.gguf_url
    with pytest.raises(InvalidRequest, match="has no GGUF file"):
        install_source(entry, tagged, "pendra")
    assert installable_into(entry, "ollama") and installable_into(entry, "pendra")


def test_a_namespaced_model_installs_from_its_namespaced_tag(catalogue: Catalogue) -> None:
    """A name in a namespace (``x/z-image-turbo``) resolves in any case with ``:latest`` implied
    and installs from its full tag; without the namespace it is another (unknown) model."""
    for typed in ("x/z-image-turbo", "X/Z-Image-Turbo", "x/z-image-turbo:latest"):
        entry, variant = _pick(catalogue, typed)
        assert install_source(entry, variant, "ollama") == "x/z-image-turbo:latest"
    assert catalogue.resolve("z-image-turbo") == (None, None)


def test_an_unknown_backend_kind_is_refused(catalogue: Catalogue) -> None:
    """A kind the rule has no source for is refused, not guessed."""
    entry, variant = _pick(catalogue, "qwen3:8b")
    with pytest.raises(InvalidRequest, match="cannot be installed into vllm"):
        install_source(entry, variant, "vllm")
    assert not installable_into(entry, "vllm")


def test_whisper_entries_install_into_speaches_only() -> None:
    """The shipped Whisper entries are Speaches models: installable there from their Hugging Face
    repository id (also a name the catalogue finds them by), never into Ollama."""
    catalogue = load_catalogue()
    whisper = [e for e in catalogue.entries if e.capability == "transcription"]
    assert {"whisper-large-v3-turbo", "whisper-tiny.en"} <= {e.id for e in whisper}
    for entry in whisper:
        assert entry.backend == "speaches" and default_kind(entry) == "speaches"
        assert installable_into(entry, "speaches") and not installable_into(entry, "ollama")
        source = install_source(entry, entry.variants[0], "speaches")
        assert catalogue.resolve(source) == (entry, entry.variants[0])

"""The one name rule (pendra/names.py): how Ollama compares model names."""

from __future__ import annotations

import pytest

from pendra.names import match, name_key


@pytest.mark.parametrize("name", [
    "llama3.2", "llama3.2:latest", "Llama3.2", "LLAMA3.2:LATEST", "library/llama3.2",
    "Library/Llama3.2:latest", "registry.ollama.ai/library/llama3.2:latest",
    "Registry.Ollama.AI/library/llama3.2",
])
def test_one_model_under_every_name_ollama_accepts_for_it(name: str) -> None:
    """Case does not matter, and the default tag, namespace and host are implied."""
    assert name_key(name) == "llama3.2:latest"


def test_tags_are_kept_and_compared_without_case() -> None:
    """An explicit tag is part of the name (``:8b`` is not ``:latest``), in any case."""
    assert name_key("qwen3:8B") == name_key("qwen3:8b") == "qwen3:8b"
    assert name_key("qwen3:8b") != name_key("qwen3")
    assert name_key("qwen3:8b-q8_0") == "qwen3:8b-q8_0"


def test_namespaces_other_than_library_stay() -> None:
    """``x/z-image-turbo`` is namespace ``x``: ``:latest`` is implied, the namespace is not dropped
    and it is not the library model ``z-image-turbo``."""
    assert name_key("x/z-image-turbo") == "x/z-image-turbo:latest"
    assert name_key("X/Z-Image-Turbo:latest") == "x/z-image-turbo:latest"
    assert name_key("registry.ollama.ai/x/z-image-turbo") == "x/z-image-turbo:latest"
    assert name_key("z-image-turbo") != name_key("x/z-image-turbo")
    assert name_key("hf.co/Org/Model:Q4_K_M") == "hf.co/org/model:q4_k_m"


def test_a_colon_before_the_last_slash_is_a_port_not_a_tag() -> None:
    """``localhost:5000/m`` has no tag, so ``:latest`` is implied."""
    assert name_key("localhost:5000/m") == "localhost:5000/m:latest"


def test_whitespace_is_not_trimmed() -> None:
    """A name with spaces is no name Ollama accepts: it matches nothing rather than a near miss."""
    assert name_key(" llama3.2") != name_key("llama3.2")


def test_match_prefers_the_exact_id_then_the_same_key() -> None:
    """``match`` returns the listed id itself when given one, else the id with the same key (the
    alphabetically first when two differ only in case), else None."""
    served = ["llama3.2:latest", "qwen3:8b", "x/z-image-turbo:latest"]
    assert match("qwen3:8b", served) == "qwen3:8b"
    assert match("Llama3.2", served) == "llama3.2:latest"
    assert match("library/llama3.2", served) == "llama3.2:latest"
    assert match("x/z-image-turbo", served) == "x/z-image-turbo:latest"
    assert match("z-image-turbo", served) is None
    assert match("qwen3", served) is None
    assert match("Mixed:latest", ["mixed:latest", "Mixed:latest"]) == "Mixed:latest"
    assert match("MIXED", ["mixed:latest", "Mixed:latest"]) == "Mixed:latest"

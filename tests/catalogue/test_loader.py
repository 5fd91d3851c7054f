"""The catalogue loader on its own: the shipped catalogue.yaml loads, names resolve to entries and
variants, and a bad catalogue file is refused whole with an error naming the file, the entry and
the field at fault."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pendra.catalogue.loader import load_catalogue, parse_catalogue
from pendra.errors import ConfigError

SHA = "a" * 64


def entry(**changes: Any) -> dict[str, Any]:
    """A valid Ollama chat entry with two variants, with ``changes`` applied."""
    base: dict[str, Any] = {
        "id": "tiny:1b", "name": "Tiny 1B", "backend": "ollama", "capability": "chat",
        "features": ["tools"], "parameter_size": "1B", "context_length": 4096, "licence": "MIT",
        "description": "A small model.", "aliases": ["tiny", "tiny:latest"],
        "variants": [{"id": "q4", "ollama": "tiny:1b", "quantization": "Q4_K_M", "size_bytes": 10},
                     {"id": "q8", "ollama": "tiny:1b-q8_0", "quantization": "Q8_0",
                      "size_bytes": 20}]}
    return base | changes


def gguf(variant_id: str = "gguf", **changes: Any) -> dict[str, Any]:
    return {"id": variant_id, "quantization": "Q4_K_M", "size_bytes": 10,
            "gguf_url": "https://example.invalid/tiny.gguf", "gguf_sha256": SHA} | changes


def catalogue_text(*entries: dict[str, Any]) -> str:
    return yaml.safe_dump({"models": list(entries)})


# --- the shipped file ----------------------------------------------------------------------------------


def test_the_shipped_catalogue_loads_once_per_process() -> None:
    """catalogue.yaml validates; every entry has a default variant and is found by its own id;
    the loaded catalogue is cached."""
    catalogue = load_catalogue()
    assert len(catalogue) > 0 and load_catalogue() is catalogue
    for item in catalogue.entries:
        assert catalogue.get(item.id) is item and catalogue.find(item.id) is item
        assert catalogue.resolve(item.id) == (item, item.variants[0])
    assert len({item.id for item in catalogue.entries}) == len(catalogue)


def test_a_catalogue_file_given_by_path_is_read_from_there(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text(catalogue_text(entry()), encoding="utf-8")
    assert [item.id for item in load_catalogue(path).entries] == ["tiny:1b"]


# --- lookups -------------------------------------------------------------------------------------------


def test_find_by_id_alias_or_any_variant_tag_with_latest_implied() -> None:
    """``find`` takes the id, an alias or any variant's Ollama tag; a bare name means
    ``<name>:latest``; anything else is None."""
    catalogue = parse_catalogue(catalogue_text(entry(), entry(
        id="other", name="Other", aliases=[],
        variants=[{"id": "v", "ollama": "other:2b", "quantization": "Q4_0", "size_bytes": 5}])))
    tiny = catalogue.get("tiny:1b")
    assert tiny is not None
    for name in ("tiny:1b", "tiny", "tiny:latest", "tiny:1b-q8_0"):
        assert catalogue.find(name) is tiny, name
    other = catalogue.get("other")
    assert catalogue.find("other") is other and catalogue.find("other:latest") is other
    assert catalogue.find("other:2b") is other
    assert catalogue.find("tiny:7b") is None and catalogue.find("nope") is None
    assert catalogue.get("tiny") is None  # get is by id only


def test_resolve_picks_the_variant_the_user_meant() -> None:
    """An id or alias gives the default (first) variant unless one is named; ``id:variant`` and a
    variant's Ollama tag give that variant; an unknown variant gives (entry, None), an unknown
    model (None, None)."""
    catalogue = parse_catalogue(catalogue_text(entry()))
    tiny = catalogue.get("tiny:1b")
    assert tiny is not None
    q4, q8 = tiny.variants
    assert catalogue.resolve("tiny:1b") == (tiny, q4)
    assert catalogue.resolve("tiny") == (tiny, q4)
    assert catalogue.resolve("tiny:1b", "q8") == (tiny, q8)
    assert catalogue.resolve("tiny:1b:q8") == (tiny, q8)
    assert catalogue.resolve("tiny:1b-q8_0") == (tiny, q8)
    assert catalogue.resolve("tiny:1b-q8_0", "q4") == (tiny, q4)
    assert catalogue.resolve("tiny:1b", "fp16") == (tiny, None)
    assert catalogue.resolve("nope") == (None, None)


def test_public_form_leaves_out_what_is_not_set() -> None:
    """``GET /api/v1/catalogue`` shows each entry's fields, without nulls."""
    catalogue = parse_catalogue(catalogue_text(entry()))
    [public] = catalogue.public()
    assert public["id"] == "tiny:1b" and public["features"] == ["tools"]
    assert public["variants"][0] == {"id": "q4", "ollama": "tiny:1b", "quantization": "Q4_K_M",
                                     "size_bytes": 10}


def test_backends_and_their_variants_agree() -> None:
    """An ``ollama`` entry has only tagged variants, a ``pendra`` entry only GGUF files, ``both``
    some of each."""
    parse_catalogue(catalogue_text(entry(backend="pendra", variants=[gguf()])))
    both = parse_catalogue(catalogue_text(entry(backend="both",
                                                variants=[entry()["variants"][0], gguf()])))
    assert [v.has_gguf for v in both.entries[0].variants] == [False, True]


# --- validation ----------------------------------------------------------------------------------------


def _with_variant(**changes: Any) -> dict[str, Any]:
    item = entry()
    item["variants"] = [item["variants"][0] | changes]
    return item


def _without(key: str) -> dict[str, Any]:
    item = entry()
    del item[key]
    return item


@pytest.mark.parametrize(("entries", "says"), [
    ([entry(colour="red")], "models[0] ('tiny:1b'): colour: Extra inputs are not permitted"),
    ([entry(backend="docker")], "models[0] ('tiny:1b'): backend:"),
    ([entry(capability="painting")], "models[0] ('tiny:1b'): capability:"),
    ([entry(features=["flying"])], "models[0] ('tiny:1b'): features.0:"),
    ([_without("licence")], "models[0] ('tiny:1b'): licence: Field required"),
    ([entry(context_length=0)], "context_length:"),
    ([entry(variants=[])], "variants:"),
    ([_with_variant(size_bytes=0)], "variants.0.size_bytes:"),
    ([_with_variant(extra=1)], "variants.0.extra: Extra inputs are not permitted"),
    ([entry(variants=[gguf(gguf_sha256=None)])], "gguf_url and gguf_sha256 go together"),
    ([entry(variants=[gguf(gguf_sha256="ABC")])], "variants.0.gguf_sha256:"),
    ([entry(variants=[gguf(gguf_url="http://plain.invalid/x.gguf")])], "variants.0.gguf_url:"),
    ([entry(variants=[{"id": "v", "quantization": "Q4", "size_bytes": 1}])],
     "needs an `ollama` tag, a `gguf_url`, a `speaches` id or an `lmstudio` id"),
    ([entry(variants=[entry()["variants"][0], entry()["variants"][0]])], "duplicate variant ids"),
    ([entry(variants=[gguf()])], "every variant of an `ollama` entry needs an `ollama` tag"),
    ([entry(backend="pendra")], "every variant of a `pendra` entry is a GGUF file"),
    ([entry(backend="both")], "a `both` entry needs at least one Ollama tag and one GGUF variant"),
    ([entry(backend="speaches")], "every variant of a `speaches` entry has a `speaches` id"),
    ([_with_variant(speaches="Systran/faster-whisper-small")],
     "`speaches` ids belong to `speaches` entries only"),
    ([entry(backend="speaches", variants=[{"id": "v", "quantization": "F16", "size_bytes": 1,
                                           "speaches": "not a repo id"}])],
     "variants.0.speaches:"),
    ([entry(), entry(name="Again", aliases=[], variants=[
        {"id": "v", "ollama": "again:1b", "quantization": "Q4", "size_bytes": 1}])],
     "duplicate id 'tiny:1b'"),
    ([entry(), entry(id="other", aliases=["tiny"], variants=[
        {"id": "v", "ollama": "other:1b", "quantization": "Q4", "size_bytes": 1}])],
     "'tiny:latest' names both 'tiny:1b' and 'other'"),
    ([entry(), entry(id="other", aliases=[], variants=[
        {"id": "v", "ollama": "tiny:1b-q8_0", "quantization": "Q4", "size_bytes": 1}])],
     "'tiny:1b-q8_0' names both 'tiny:1b' and 'other'"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_entry_refuses_the_whole_file_naming_entry_and_field(
        entries: list[dict[str, Any]], says: str, tmp_path: Path) -> None:
    """Each problem is a ConfigError that starts with the file and says what is wrong where."""
    path = tmp_path / "bad.yaml"
    path.write_text(catalogue_text(*copy.deepcopy(entries)), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)
    assert caught.value.message.startswith(f"{path}: "), caught.value.message
    assert says in caught.value.message


@pytest.mark.parametrize(("text", "says"), [
    ("models: [unclosed", "is not valid YAML"),
    ("", "must be a mapping with a `models` list"),
    ("- just a list", "must be a mapping with a `models` list"),
    ("models: {a: 1}", "must be a mapping with a `models` list"),
    ("models: [5]", "models[0] ('?'): entry:"),
])
def test_a_file_of_the_wrong_shape_is_refused(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_catalogue(text, "cat.yaml")
    assert caught.value.message.startswith("cat.yaml") and says in caught.value.message

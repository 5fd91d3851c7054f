"""The OpenAI → Ollama translation refuses a malformed body that slipped past the control plane
with ``InvalidRequest`` naming the field — never a TypeError/AttributeError (which became a 500,
a 502 and a retry on another worker) — and never forwards an Ollama option of the wrong type."""

from __future__ import annotations

from typing import Any

import pytest

from pendra.backends.ollama import translate
from pendra.backends.ollama.discovery import served_capabilities
from pendra.backends.ollama.options import OPTIONS, check_options
from pendra.errors import InvalidRequest

HELLO = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": HELLO} | fields


@pytest.mark.parametrize(("body", "param"), [
    (chat(stop=5), "stop"),
    (chat(stop=["a"] * 5), "stop"),
    (chat(messages=[{"role": "assistant", "tool_calls": ["x"]}]), "messages[0].tool_calls[0].function"),
    (chat(messages=[{"role": "assistant", "tool_calls": "x"}]), "messages[0].tool_calls"),
    (chat(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]),
     "messages[0].tool_calls[0].function.arguments"),
    (chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
     "messages[0].content[0].text"),
    (chat(temperature="hot"), "temperature"),
    (chat(temperature=True), "temperature"),
    (chat(max_tokens="ten"), "max_tokens"),
    (chat(max_tokens=-5), "max_tokens"),
    (chat(seed=1.5), "seed"),
    (chat(options={"num_ctx": -1}), "options.num_ctx"),
    (chat(options={"num_ctx": "8192"}), "options.num_ctx"),
    (chat(options={"stop": "x"}), "options.stop"),
    (chat(options="x"), "options"),
    (chat(tools="x"), "tools"),
    (chat(response_format="x"), "response_format"),
    (chat(response_format={"type": "json_schema", "json_schema": "x"}),
     "response_format.json_schema.schema"),
    (chat(reasoning_effort=["x"]), "reasoning_effort"),
    (chat(keep_alive=[1]), "keep_alive"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_chat_bodies_are_invalid_requests_naming_the_field(body: dict[str, Any],
                                                                     param: str) -> None:
    """Each malformed field is an InvalidRequest (400 on the wire) with ``param`` set."""
    with pytest.raises(InvalidRequest) as caught:
        translate.chat_request(body, "m", num_ctx=4096)
    assert caught.value.param == param and caught.value.status == 400


@pytest.mark.parametrize("stream_options", ["x", 5, ["include_usage"]])
def test_stream_options_that_are_not_an_object_are_refused(stream_options: Any) -> None:
    """``stream_options: "x"`` used to raise AttributeError in the worker."""
    with pytest.raises(InvalidRequest) as caught:
        translate.include_usage(chat(stream_options=stream_options))
    assert caught.value.param == "stream_options"


def test_well_typed_fields_still_map_to_ollama() -> None:
    """The checks change nothing for a good body: OpenAI fields become options, the client's
    options win, num_ctx is injected unless given."""
    native = translate.chat_request(chat(max_tokens=5, temperature=0.5, stop="x", seed=3,
                                         options={"top_k": 3, "temperature": 0.1}),
                                    "m", num_ctx=4096)
    assert native["options"] == {"num_predict": 5, "temperature": 0.1, "seed": 3, "stop": ["x"],
                                 "top_k": 3, "num_ctx": 4096}
    assert translate.include_usage(chat(stream_options={"include_usage": True}))
    assert not translate.include_usage(chat())


def test_options_table_checks_types_and_ranges() -> None:
    """Known options need their type and range (bool is not a number); unknown keys pass;
    explicit nulls are dropped rather than forwarded."""
    assert check_options({"num_ctx": 1, "top_p": 1, "unknown": "x", "seed": None}) == {
        "num_ctx": 1, "top_p": 1, "unknown": "x"}
    for bad in ({"num_ctx": 0}, {"num_ctx": True}, {"top_p": 1.5}, {"mirostat": 3},
                {"use_mmap": 1}, {"num_predict": 2.5}):
        with pytest.raises(InvalidRequest):
            check_options(bad)
    assert {"num_ctx", "num_predict", "temperature", "stop"} <= set(OPTIONS)


def test_embed_dimensions_must_be_a_positive_integer() -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate.embed_request({"input": "x", "dimensions": "8"}, "m")
    assert caught.value.param == "dimensions"


@pytest.mark.parametrize(("version", "image"), [("0.20.0", True), ("0.32.6", False),
                                                ("0.14.2", False), ("nonsense", False)])
def test_image_capability_only_where_ollama_generates_images(version: str, image: bool) -> None:
    """A model's ``image`` capability is advertised only on Ollama 0.14.3–0.32.5, and ``audio``
    never (Ollama cannot transcribe)."""
    served = served_capabilities(("completion", "image", "audio", "vision"), version)
    assert ("image" in served) is image
    assert "audio" not in served and "completion" in served and "vision" in served

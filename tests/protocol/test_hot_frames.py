"""The hot frames' parse (``chunk``, ``chunks``, ``end``: frames.py ``_hot_frame``) accepts
exactly what pydantic's strict validation accepts, builds the same frame, and leaves every refusal
to validation, so a refused frame gets the same message either way.

Each case is parsed twice: by ``parse_frame`` (which takes the hot path for these frames) and by
the strict ``TypeAdapter.validate_json`` alone (the reference)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from pendra.errors import ProtocolError
from pendra.protocol import frames
from pendra.protocol.frames import (MAX_CHUNKS_PER_FRAME, MAX_TOKEN_COUNT, Chunk, Chunks, End,
                                    dump_frame, parse_frame)

PIECE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
         "choices": [{"index": 0, "delta": {"content": "hé\u2028llo \U0001f600"},
                      "finish_reason": None}], "nested": {"a": [1, 2.5, True, None, "x"]}}


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


CASES: list[str | bytes] = [
    # valid, as dump_frame writes them
    dump_frame(Chunk(id="req_1", data=PIECE)),
    dump_frame(Chunks(id="req_1", data=[PIECE] * 3)),
    dump_frame(Chunks(id="r" * 64, data=[{}] * MAX_CHUNKS_PER_FRAME)),
    dump_frame(End(id="req_1", usage={"prompt_tokens": 3, "completion_tokens": 4,
                                      "total_tokens": 7}, finish_reason="stop")),
    dump_frame(End(id="req_1")),
    '{"type":"end","id":"req_1"}',
    '{"type":"end","id":"req_1","usage":{}}',
    '{"type":"end","id":"req_1","finish_reason":null,"usage":{"total_tokens":1}}',
    '{"type":"end","id":"a","usage":{"prompt_tokens":-5,"total_tokens":99999999999999}}',
    '{"type":"end","id":"a","usage":{"prompt_tokens":123456789012345678901234567890}}',
    '{"type":"end","id":"a","finish_reason":"' + "x" * 64 + '"}',
    # JSON the grammar allows or refuses in the same way
    '{"type":"chunk","id":"a","data":{"x":NaN,"y":Infinity,"z":1e400}}',
    '{"type":"chunk","id":"a","data":{"x":123456789012345678901234567890}}',
    '{"type":"chunk","id":"a","data":{"x":1},"data":{"y":2}}',
    '{"type":"chunk","id":"a","id":"b","data":{}}',
    '{"type":"chunk","id":"a","data":{"x":"\\ud800"}}',
    b'{"type":"chunk","id":"a","data":{"x":"\xff"}}',
    '{"type":"chunk","id":"a","data":{"x":' + deep(150) + '}}',
    '{"type":"chunk","id":"a","data":{"x":' + deep(199) + '}}',
    '{"type":"chunk","id":"a","data":{"x":' + deep(200) + '}}',
    '{"type":"chunk","id":"a","data":{"x":' + deep(5000) + '}}',
    '{"type":"chunk","id":"a","data":{}} trailing',
    '{"type":"chunk","id":"a","data":{}',
    '{"type":"chunk"',
    '{"type":"chunks","id":"a","data":[{}]',
    # out of bounds or of the wrong type
    '{"type":"chunk","id":"","data":{}}',
    '{"type":"chunk","id":"' + "r" * 65 + '","data":{}}',
    '{"type":"chunk","id":5,"data":{}}',
    '{"type":"chunk","id":"a","data":[]}',
    '{"type":"chunk","id":"a","data":"text"}',
    '{"type":"chunk","id":"a","data":null}',
    '{"type":"chunk","id":"a"}',
    '{"type":"chunk","data":{}}',
    '{"type":"chunk","id":"a","data":{},"extra":1}',
    '{"type":"chunks","id":"a","data":[]}',
    '{"type":"chunks","id":"a","data":[{}, 1]}',
    '{"type":"chunks","id":"a","data":[{}, []]}',
    '{"type":"chunks","id":"a","data":{}}',
    '{"type":"chunks","id":"a","data":[' + ",".join(["{}"] * (MAX_CHUNKS_PER_FRAME + 1)) + "]}",
    '{"type":"chunks","id":"a","data":[{}],"more":true}',
    '{"type":"end","id":"a","usage":{"prompt_tokens":true}}',
    '{"type":"end","id":"a","usage":{"prompt_tokens":1.0}}',
    '{"type":"end","id":"a","usage":{"prompt_tokens":"1"}}',
    '{"type":"end","id":"a","usage":{"cached_tokens":1}}',
    '{"type":"end","id":"a","usage":[]}',
    '{"type":"end","id":"a","usage":null}',
    '{"type":"end","id":"a","finish_reason":"' + "x" * 65 + '"}',
    '{"type":"end","id":"a","finish_reason":7}',
    '{"type":"end","id":"a","status":200}',
    '{"type":"end"}',
    '{"type":"endless","id":"a"}',
    '{"type":"chunkier","id":"a","data":{}}',
    '{"type":"chunk" , "id":"a","data":{}}',
]


def reference(raw: str | bytes) -> Any:
    """What strict validation alone makes of ``raw``: the frame, or the refusal's message."""
    try:
        return frames._ADAPTER.validate_json(raw, strict=True)
    except ValidationError as exc:
        return ProtocolError(frames._refusal(exc)).message


def parsed(raw: str | bytes) -> Any:
    try:
        return parse_frame(raw)
    except ProtocolError as exc:
        return exc.message


@pytest.mark.parametrize("raw", CASES + [case.encode() for case in CASES if isinstance(case, str)])
def test_the_hot_path_parses_and_refuses_exactly_as_validation_does(raw: str | bytes) -> None:
    expected = reference(raw)
    got = parsed(raw)
    assert type(got) is type(expected)
    assert repr(got) == repr(expected)  # repr: NaN, which the cases include, is never equal
    if isinstance(expected, frames.Frame):
        if "NaN" not in str(raw):
            assert got == expected
        assert got.model_fields_set == expected.model_fields_set
        assert dump_frame(got) == dump_frame(expected)


def test_token_counts_are_clamped_on_the_hot_path_too() -> None:
    frame = parse_frame('{"type":"end","id":"a","usage":{"prompt_tokens":-1,'
                        '"completion_tokens":99999999999,"total_tokens":5}}')
    assert isinstance(frame, End)
    assert frame.usage == {"prompt_tokens": 0, "completion_tokens": MAX_TOKEN_COUNT,
                           "total_tokens": 5}


def test_a_hot_frame_is_immutable_like_any_other() -> None:
    frame = parse_frame(dump_frame(Chunk(id="a", data={"x": 1})))
    with pytest.raises(ValidationError):
        frame.id = "b"  # type: ignore[misc]


def test_an_oversized_chunk_frame_is_refused_before_it_is_parsed() -> None:
    raw = dump_frame(Chunk(id="a", data={"text": "x" * 2000}))
    with pytest.raises(ProtocolError, match="over the limit of 1000"):
        parse_frame(raw, max_bytes=1000)


def test_the_hot_path_is_taken_for_the_hot_frames_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk as dump_frame writes it never reaches validate_json; other frames always do."""
    calls: list[str] = []
    real = frames._ADAPTER

    class Counting:
        def validate_json(self, raw: Any, strict: bool) -> Any:
            calls.append("validated")
            return real.validate_json(raw, strict=strict)

    monkeypatch.setattr(frames, "_ADAPTER", Counting())
    parse_frame(orjson.dumps({"type": "chunk", "id": "a", "data": PIECE}))
    parse_frame(dump_frame(End(id="a", usage={"total_tokens": 1})))
    assert calls == []
    parse_frame('{"type":"ping","ts":1.5}')
    assert calls == ["validated"]
    with pytest.raises(ProtocolError):  # a hot frame out of bounds: validation words the refusal
        parse_frame('{"type":"chunk","id":"","data":{}}')
    assert calls == ["validated", "validated"]


def test_the_hand_checks_bounds_are_the_models_bounds() -> None:
    """If a model's bound changes, the hot path's copy must change with it (or this fails)."""
    chunk = Chunk.model_json_schema()["properties"]
    chunks = Chunks.model_json_schema()["properties"]
    end = End.model_json_schema()["properties"]
    for props in (chunk, chunks, end):
        assert (props["id"]["minLength"], props["id"]["maxLength"]) == (1, 64)
    assert chunks["data"]["minItems"] == 1
    assert chunks["data"]["maxItems"] == MAX_CHUNKS_PER_FRAME
    assert set(Chunk.model_fields) == frames._CHUNK_KEYS == set(Chunks.model_fields)
    assert set(End.model_fields) == frames._END_KEYS
    assert set(end["usage"]["propertyNames"]["enum"]) == frames._USAGE_KEYS
    finish = next(option for option in end["finish_reason"]["anyOf"] if option.get("type") == "string")
    assert finish["maxLength"] == frames._END_FINISH_MAX

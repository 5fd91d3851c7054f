"""Coalescing chunks into ``chunks`` frames (protocol version 3) and the fast encoder of the hot
frames: order is kept, bounds hold, and orjson's output parses to exactly what pydantic's does."""

from __future__ import annotations

import random

import pytest

from pendra.errors import ProtocolError
from pendra.protocol.frames import (COALESCE_BYTES, MAX_CHUNKS_PER_FRAME, Chunk, Chunks, End,
                                    Error, Frame, Ping, coalesce, dump_frame, parse_frame, piece)


def frames_of(pieces: list[Frame]) -> list[Frame]:
    return [parse_frame(raw) for raw in coalesce(piece(frame) for frame in pieces)]


def flatten(frames: list[Frame]) -> list[tuple[str, object]]:
    """(request id, data) per piece, and (type, id) for every other frame, in wire order."""
    out: list[tuple[str, object]] = []
    for frame in frames:
        if isinstance(frame, Chunk):
            out.append((frame.id, frame.data))
        elif isinstance(frame, Chunks):
            out.extend((frame.id, data) for data in frame.data)
        else:
            out.append((frame.type, getattr(frame, "id", None)))
    return out


def test_runs_of_one_request_become_one_frame_and_order_is_kept() -> None:
    """Consecutive chunks of one request merge; another request's chunk or any other frame
    starts a new frame; a run of one stays a chunk; the end comes after its pieces."""
    sent: list[Frame] = [Chunk(id="a", data={"n": n}) for n in range(3)]
    sent += [Chunk(id="b", data={"n": 0}), Chunk(id="a", data={"n": 3}), Ping(ts=1.0),
             Chunk(id="a", data={"n": 4}), Chunk(id="a", data={"n": 5}), End(id="a")]
    got = frames_of(sent)
    assert [f.type for f in got] == ["chunks", "chunk", "chunk", "ping", "chunks", "end"]
    assert flatten(got) == flatten(sent)


def test_a_long_run_is_split_at_the_piece_and_byte_bounds() -> None:
    """No chunks frame holds more than MAX_CHUNKS_PER_FRAME pieces or much over COALESCE_BYTES."""
    many = [Chunk(id="a", data={"n": n}) for n in range(MAX_CHUNKS_PER_FRAME * 2 + 5)]
    got = frames_of(many)
    assert [len(f.data) for f in got if isinstance(f, Chunks)] == [MAX_CHUNKS_PER_FRAME] * 2 + [5]
    assert flatten(got) == flatten(many)
    big = [Chunk(id="a", data={"text": "x" * (COALESCE_BYTES // 4)}) for _ in range(10)]
    raws = coalesce(piece(frame) for frame in big)
    assert len(raws) > 1 and all(len(raw) < 2 * COALESCE_BYTES for raw in raws)


def test_interleaved_random_streams_keep_each_requests_order() -> None:
    """Whatever the interleaving of several requests' pieces, each request's pieces arrive in
    order and every end follows its own pieces."""
    rng = random.Random(11)
    for _ in range(50):
        counters = {rid: 0 for rid in "abc"}
        sent: list[Frame] = []
        for _ in range(rng.randrange(1, 60)):
            rid = rng.choice("abc")
            sent.append(Chunk(id=rid, data={"n": counters[rid]}))
            counters[rid] += 1
        sent += [End(id=rid) for rid in "abc"]
        assert flatten(frames_of(sent)) == flatten(sent)


def test_a_chunks_frame_needs_one_to_max_pieces_of_json_objects() -> None:
    """Empty, over-long and non-object lists are refused like any bad frame."""
    for data in ("[]", "[" + ",".join(["{}"] * (MAX_CHUNKS_PER_FRAME + 1)) + "]", "[1]", "{}"):
        with pytest.raises(ProtocolError):
            parse_frame('{"type":"chunks","id":"a","data":' + data + "}")
    ok = parse_frame('{"type":"chunks","id":"a","data":[{}]}')
    assert isinstance(ok, Chunks) and ok.data == [{}]


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**31, 2**63 - 1, -(2**63), 2**64, 10**30, -(10**40)])
    if kind == 2:
        return rng.choice([0.0, -0.5, 1e300, 1.5e-300, 3.141592653589793])
    if kind in (3, 4, 5):
        return "".join(rng.choice(["a", "é", "\u2028", "\n", "\"", "\\", "😀", "\x00", "/"])
                       for _ in range(rng.randrange(6)))
    if kind in (6, 7):
        return {str(_random_json(rng, 9)): _random_json(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_the_fast_encoder_agrees_with_pydantic() -> None:
    """dump_frame's orjson path for chunk, chunks and end frames parses back to the same frame
    as pydantic's own encoding of it, for random JSON payloads (big integers fall back to
    pydantic), and text that is not valid Unicode is refused by both."""
    rng = random.Random(7)
    for _ in range(400):
        data = {"k": _random_json(rng), "choices": [_random_json(rng)]}
        frames: list[Frame] = [Chunk(id="req_1", data=data),
                               Chunks(id="req_1", data=[data, {"x": _random_json(rng)}]),
                               End(id="req_1", usage={"total_tokens": rng.randrange(10**6)},
                                   finish_reason=rng.choice([None, "stop"]))]
        for frame in frames:
            fast = dump_frame(frame)
            assert fast.startswith('{"type":"' + frame.type + '",')
            assert parse_frame(fast) == parse_frame(frame.model_dump_json()) == frame
    bad = Chunk(id="req_1", data={"text": "\ud800"})
    for encode in (dump_frame, bad.__class__.model_dump_json):
        with pytest.raises(ValueError):
            encode(bad)
    assert dump_frame(Error(id="r", status=500, message="m")) == \
        Error(id="r", status=500, message="m").model_dump_json()

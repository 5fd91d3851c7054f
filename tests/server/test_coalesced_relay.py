"""Coalesced answers (protocol version 3) relayed to the client, and older workers beside them.

A real server and fake workers on real WebSockets: a worker's ``chunks`` frames come out as one
SSE event per piece, in order; a failure after them still ends the stream with an error event and
no ``[DONE]``; a version-2 worker (one ``chunk`` per piece) is served as before.
"""

from __future__ import annotations

import json

import httpx

from api_fixtures import TIMEOUT_S, USAGE, Api, FakeWorker, fleet, sse_events
from pendra.protocol.frames import (MAX_CHUNKS_PER_FRAME, Chunk, Chunks, End, Error, Request,
                                    dump_frame)

HELLO = [{"role": "user", "content": "count"}]
STREAM = {"model": "llama3.2", "messages": HELLO, "stream": True}


def piece(n: int) -> dict[str, object]:
    return {"object": "chat.completion.chunk", "model": "llama3.2:latest",
            "choices": [{"index": 0, "delta": {"content": f"t{n} "}, "finish_reason": None}]}


def texts(events: list[str]) -> list[str]:
    return [json.loads(e)["choices"][0]["delta"].get("content", "") for e in events
            if e != "[DONE]" and "choices" in json.loads(e)]


async def stream(api: Api) -> tuple[int, list[str]]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S,
                                 headers={"Authorization": f"Bearer {api.key}"}) as client:
        response = await client.post("/api/v1/chat/completions", json=STREAM)
    return response.status_code, sse_events(response.text)


async def coalesced(worker: FakeWorker, req: Request) -> None:
    """Pieces 0–9 as two chunks frames around a single chunk, then the end."""
    await worker.send(Chunks(id=req.id, data=[piece(n) for n in range(4)]))
    await worker.send(Chunk(id=req.id, data=piece(4)))
    await worker.send(Chunks(id=req.id, data=[piece(n) for n in range(5, 10)]))
    await worker.send(End(id=req.id, usage=USAGE, finish_reason="stop"))


async def fails_after_coalesced(worker: FakeWorker, req: Request) -> None:
    """Three pieces in one chunks frame, then an error, sent back to back."""
    await worker.send(Chunks(id=req.id, data=[piece(n) for n in range(3)]))
    await worker.send(Error(id=req.id, status=500, message="the GPU fell over"))


async def drops_after_coalesced(worker: FakeWorker, req: Request) -> None:
    """Three pieces in one chunks frame, then the socket drops."""
    await worker.send(Chunks(id=req.id, data=[piece(n) for n in range(3)]))
    await worker.disconnect()


async def too_many_pieces(worker: FakeWorker, req: Request) -> None:
    """A chunks frame over the bound (written by hand: the model refuses to build it)."""
    frame = dump_frame(Chunks(id=req.id, data=[piece(0)]))
    assert frame.startswith('{"type":"chunks",')
    await worker.send_raw(frame.replace('"data":[', '"data":[' + "{}," * MAX_CHUNKS_PER_FRAME))


async def test_chunks_frames_are_relayed_as_one_event_per_piece_in_order(api: Api) -> None:
    """Pieces from chunks and chunk frames reach the client in order, then [DONE]; the usage
    row carries the end's counts."""
    async with fleet(api, FakeWorker("batcher", script=coalesced)):
        status, events = await stream(api)
    assert status == 200
    assert texts(events) == [f"t{n} " for n in range(10)]
    assert events[-1] == "[DONE]" and len(events) == 11


async def test_an_error_after_coalesced_chunks_ends_with_an_error_event_and_no_done(
        api: Api) -> None:
    """An error frame after a chunks frame: the pieces, then one error event, never [DONE]."""
    async with fleet(api, FakeWorker("shaky", script=fails_after_coalesced)):
        status, events = await stream(api)
    assert status == 200 and "[DONE]" not in events
    assert texts(events[:-1]) == ["t0 ", "t1 ", "t2 "]
    assert "the GPU fell over" in json.loads(events[-1])["error"]["message"]


async def test_a_drop_after_coalesced_chunks_ends_with_an_error_event_and_no_done(
        api: Api) -> None:
    """The worker's socket drops after a chunks frame: the pieces, then a worker error event."""
    async with fleet(api, FakeWorker("flaky", script=drops_after_coalesced)):
        status, events = await stream(api)
    assert status == 200 and "[DONE]" not in events
    assert texts(events[:-1]) == ["t0 ", "t1 ", "t2 "]
    error = json.loads(events[-1])["error"]
    assert error["type"] == "worker_error" and "flaky" in error["message"]


async def test_a_chunks_frame_over_the_bound_closes_the_worker(api: Api) -> None:
    """More than MAX_CHUNKS_PER_FRAME pieces is a protocol error: the request fails, and nothing
    the worker sent reaches the client."""
    async with fleet(api, FakeWorker("greedy", script=too_many_pieces)):
        async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S,
                                     headers={"Authorization": f"Bearer {api.key}"}) as client:
            response = await client.post("/api/v1/chat/completions", json=STREAM)
    assert response.status_code == 502, response.text
    assert "greedy" in response.json()["error"]["message"]


async def test_a_version_2_worker_is_served_one_chunk_frame_per_piece(api: Api) -> None:
    """A worker speaking protocol version 2 (no chunks frames) streams and answers as before."""
    async with fleet(api, FakeWorker("elder", protocol_version=2)):
        status, events = await stream(api)
        assert status == 200 and events[-1] == "[DONE]" and len(events) == 5
        assert "".join(texts(events)) == "one two three"
        async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S,
                                     headers={"Authorization": f"Bearer {api.key}"}) as client:
            response = await client.post("/api/v1/chat/completions",
                                         json={**STREAM, "stream": False})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello from elder"

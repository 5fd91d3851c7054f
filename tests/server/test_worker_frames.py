"""An enrolled worker is trusted to serve, not to break the server: its frames on a real socket.

A frame that does not fit the protocol's strict models (wrong types, out-of-range values, too many
models) closes that worker's connection with PROTOCOL_ERROR naming the problem, and nothing it sent
reaches a page or an endpoint: other workers and every client carry on. Counts are clamped where
they enter, and the name shown for a worker is the one it was enrolled with.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from sqlalchemy import select

from api_fixtures import CHAT_MODEL, EMBED_MODEL, TIMEOUT_S, Api, FakeWorker, completion, fleet
from pendra.protocol.close import CloseReason
from pendra.protocol.frames import MAX_TOKEN_COUNT, Chunk, Request
from pendra.protocol.inventory import MAX_MODELS
from pendra.server.store.tables import Usage

GOOD_BACKEND = {"kind": "ollama", "endpoint": "http://fake", "verified": True}
GOOD_MODEL = {"id": "odd:latest", "backend": "ollama", "capabilities": ["completion"]}
BAD_INVENTORIES = {
    "modified_at": [{**GOOD_MODEL, "modified_at": 123}],
    "capabilities": [{**GOOD_MODEL, "capabilities": [{}]}],
    "context_length": [{**GOOD_MODEL, "context_length": "abc"}],
    "too many": [{**GOOD_MODEL, "id": f"m{i}"} for i in range(MAX_MODELS + 1)],
    # Over LARGE_FRAME_BYTES: refused before it is parsed at all.
    "huge": [{**GOOD_MODEL, "id": f"m{i}", "family": "f" * 100} for i in range(50_000)],
}


def inventory(models: list[dict[str, object]], backends: list[object] | None = None) -> str:
    return json.dumps({"type": "inventory", "backends": [GOOD_BACKEND] if backends is None
                       else backends, "models": models, "max_concurrent": 1})


async def closed_code(worker: FakeWorker) -> tuple[int | None, str]:
    assert worker._reader is not None and worker._ws is not None
    async with asyncio.timeout(TIMEOUT_S):
        await worker._reader
    return worker._ws.close_code, worker._ws.close_reason or ""


@pytest.mark.parametrize("problem", sorted(BAD_INVENTORIES) + ["backends"])
async def test_a_bad_inventory_closes_only_its_worker(api: Api, problem: str) -> None:
    """Inventory fields of the wrong type (or too many models) close that worker's socket with
    4000 naming the field; the models API and the status page keep answering for everyone with
    the other worker's models, and the bad worker's earlier models are gone, not half-replaced."""
    async with fleet(api, FakeWorker("good", models=(CHAT_MODEL,)),
                     FakeWorker("bad", models=(EMBED_MODEL,))) as (good, bad):
        if problem == "backends":
            await bad.send_raw(inventory([GOOD_MODEL], backends=[{}]))
        else:
            await bad.send_raw(inventory(BAD_INVENTORIES[problem]))
        code, reason = await closed_code(bad)
        assert code == CloseReason.PROTOCOL_ERROR
        assert ("must be a request or a chunk" if problem == "huge" else "inventory") in reason
        async with httpx.AsyncClient(base_url=api.base_url, headers=api.headers) as http:
            models = await http.get("/v1/models")
            status = await http.get("/api/v1/status")
        assert models.status_code == 200 and status.status_code == 200
        assert [m["id"] for m in models.json()["data"]] == [CHAT_MODEL.id]
        assert [w["name"] for w in status.json()["workers"]] == [good.name]


async def test_the_enrolled_name_is_shown_not_the_claimed_one(api: Api) -> None:
    """A worker enrolled as "vm" that says it is "evil" in its hello is shown as "vm"
    everywhere: the hub, the models list and X-Worker-Name."""
    async with fleet(api, FakeWorker("vm", models=(CHAT_MODEL,), hello_name="evil")) as (worker,):
        assert api.app.state.hub.get(worker.worker_id).name == "vm"
        async with httpx.AsyncClient(base_url=api.base_url, headers=api.headers) as http:
            models = (await http.get("/v1/models")).json()["data"]
            reply = await http.post("/v1/chat/completions", json={
                "model": CHAT_MODEL.id, "messages": [{"role": "user", "content": "hi"}]})
        assert models[0]["pendra"]["workers"] == ["vm"]
        assert reply.status_code == 200 and reply.headers["X-Worker-Name"] == "vm"


async def test_absurd_token_counts_are_clamped_and_metered(api: Api) -> None:
    """An end frame claiming 10**30 prompt tokens (or a negative count) is clamped where it
    enters: the request succeeds, its usage row holds the clamped count, and the usage writer
    goes on writing the rows that follow."""
    async def boast(worker: FakeWorker, req: Request) -> None:
        await worker.send(Chunk(id=req.id, data=completion(req.model, "done")))
        await worker.send_raw(json.dumps({"type": "end", "id": req.id, "usage": {
            "prompt_tokens": 10**30, "completion_tokens": -3}}))

    async with fleet(api, FakeWorker("boaster", models=(CHAT_MODEL,), script=boast)):
        async with httpx.AsyncClient(base_url=api.base_url, headers=api.headers) as http:
            for _ in range(2):
                reply = await http.post("/v1/chat/completions", json={
                    "model": CHAT_MODEL.id, "messages": [{"role": "user", "content": "hi"}]})
                assert reply.status_code == 200
        await api.app.state.usage.flush()
    async with api.app.state.store.session() as session:
        rows = list(await session.scalars(select(Usage)))
    assert len(rows) == 2
    assert {(row.prompt_tokens, row.completion_tokens) for row in rows} == {(MAX_TOKEN_COUNT, 0)}

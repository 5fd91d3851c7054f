"""The install API over a scripted worker: typed outcomes, keep-alive on the event stream, and
removals named the way clients name models."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from api_fixtures import ADMIN_TOKEN, TIMEOUT_S, Api, FakeWorker
from pendra.protocol.frames import CancelOp, Install, OpDone, OpFailed, Progress, Uninstall
from pendra.server import sse


def admin(api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


async def start(http: httpx.AsyncClient, worker: FakeWorker) -> tuple[str, Install]:
    """Start an install of gemma3:1b on ``worker``; its op id and the frame the worker got."""
    response = await http.post("/api/v1/installs", json={"model": "gemma3:1b", "worker": "alpha"})
    assert response.status_code == 202, response.text
    op_id = response.json()["id"]
    await worker.wait_for(lambda: any(isinstance(f, Install) for f in worker.ops))
    (frame,) = [f for f in worker.ops if isinstance(f, Install)]
    assert frame.op_id == op_id and frame.model == "gemma3:1b"
    return op_id, frame


async def ended(http: httpx.AsyncClient, op_id: str) -> dict[str, Any]:
    """The install once it has ended (bounded)."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            snapshot: dict[str, Any] = (await http.get(f"/api/v1/installs/{op_id}")).json()
            if snapshot["state"] in ("succeeded", "failed", "cancelled"):
                return snapshot
            await asyncio.sleep(0.02)


async def test_a_failure_that_reads_cancelled_is_still_a_failure(api: Api,
                                                               alpha: FakeWorker) -> None:
    """The outcome is the frame's type and status, never its text: a ``failed`` whose message
    happens to be "cancelled" (status 500) ends the install failed, with that message."""
    async with admin(api) as http:
        op_id, _ = await start(http, alpha)
        await alpha.send(OpFailed(op_id=op_id, message="cancelled", status=500))
        snapshot = await ended(http, op_id)
    assert (snapshot["state"], snapshot["error"]) == ("failed", "cancelled")


async def test_a_cancelled_install_ends_cancelled(api: Api, alpha: FakeWorker) -> None:
    """Cancel sends cancel_op; the worker's typed cancellation ends the install cancelled, with no
    error."""
    async with admin(api) as http:
        op_id, _ = await start(http, alpha)
        await alpha.send(Progress(op_id=op_id, status="pulling", completed=10, total=100))
        assert (await http.post(f"/api/v1/installs/{op_id}/cancel")).status_code == 200
        await alpha.wait_for(lambda: CancelOp(op_id=op_id) in alpha.ops)
        await alpha.send(OpFailed.cancelled(op_id))
        snapshot = await ended(http, op_id)
    assert (snapshot["state"], snapshot["error"]) == ("cancelled", None)


async def test_the_event_stream_keeps_a_quiet_install_alive(api: Api, alpha: FakeWorker,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """While an install is quiet the API's event stream sends keep-alive comments (like the
    console's), then the final state ends it; it is never cached."""
    monkeypatch.setattr(sse, "KEEPALIVE_S", 0.1)
    async with admin(api) as http:
        op_id, _ = await start(http, alpha)
        lines: list[str] = []
        async with asyncio.timeout(TIMEOUT_S):
            async with http.stream("GET", f"/api/v1/installs/{op_id}/events") as response:
                assert response.headers["cache-control"] == "no-store"
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line == ": keepalive" and lines.count(line) == 2:
                        await alpha.send(OpDone(op_id=op_id))
    data = [json.loads(line[len("data: "):]) for line in lines if line.startswith("data: ")]
    assert lines.count(": keepalive") >= 2
    assert data[0]["state"] in ("queued", "running") and data[-1]["state"] == "succeeded"
    assert lines[-3:] == ["event: end", f"data: {json.dumps(data[-1], separators=(',', ':'))}", ""]


@pytest.mark.parametrize("typed", ["llama3.2", "Llama3.2:LATEST", "library/llama3.2"])
async def test_a_removal_names_the_model_as_the_worker_lists_it(api: Api, alpha: FakeWorker,
                                                                typed: str) -> None:
    """``DELETE /workers/{w}/models/{name}`` takes any name Ollama would accept and sends the
    worker the id it listed."""
    async with admin(api) as http:
        removal = asyncio.create_task(http.delete(f"/api/v1/workers/alpha/models/{typed}"))
        await alpha.wait_for(lambda: any(isinstance(f, Uninstall) for f in alpha.ops))
        (frame,) = [f for f in alpha.ops if isinstance(f, Uninstall)]
        await alpha.send(OpDone(op_id=frame.op_id))
        response = await removal
    assert response.status_code == 204
    assert frame.model == "llama3.2:latest"


async def test_install_cancel_and_removal_are_audited(api: Api, alpha: FakeWorker) -> None:
    """Each accepted install, cancel and removal leaves an audit row naming the admin token as who,
    the model and the worker."""
    from pendra.server.store import audit
    from pendra.server.store.db import Store

    async with admin(api) as http:
        op_id, _ = await start(http, alpha)
        assert (await http.post(f"/api/v1/installs/{op_id}/cancel")).status_code == 200
        await alpha.wait_for(lambda: CancelOp(op_id=op_id) in alpha.ops)
        await alpha.send(OpFailed.cancelled(op_id))
        await ended(http, op_id)
        removal = asyncio.create_task(http.delete("/api/v1/workers/alpha/models/llama3.2"))
        await alpha.wait_for(lambda: any(isinstance(f, Uninstall) for f in alpha.ops))
        (frame,) = [f for f in alpha.ops if isinstance(f, Uninstall)]
        await alpha.send(OpDone(op_id=frame.op_id))
        assert (await removal).status_code == 204
    store = await Store.open(api.settings.database_url)
    try:
        async with store.session() as session:
            rows = list(reversed(await audit.list_audit(session)))
    finally:
        await store.close()
    assert [(r.action, r.actor) for r in rows] == [
        ("model.install_requested", "admin token"), ("model.install_cancelled", "admin token"),
        ("model.remove_requested", "admin token")]
    assert rows[0].target == "gemma3:1b on alpha" and rows[0].detail == op_id
    assert rows[2].target == "llama3.2 on alpha" and rows[2].address == "127.0.0.1"

"""Many simulated workers in one process, each on its own real WebSocket to ``/ws/gpu``, speaking
the real protocol through the worker's own sans-I/O ``WorkerSession`` (handshake, inventory,
heartbeats both ways). A request is answered at once with a canned completion, so a request's time
through the control plane is the control plane's (and the socket's), not a backend's.

Rules: enrolment goes straight into the control plane's store (as ``pendra workers add`` does, but
without a process per worker); each worker is two tasks (read, beat) owned by the ``Fleet``'s
TaskGroup; ``set_models`` sends a new inventory at once, as a worker does after discovery.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pendra.backends.base import ModelInfo
from pendra.protocol import signing
from pendra.protocol.frames import (
    MAX_FRAME_BYTES,
    Chunk,
    End,
    Frame,
    Inventory,
    Request,
    dump_frame,
)
from pendra.protocol.session import Close, Output, Ready, Received, WorkerSession
from pendra.server.store import workers as worker_store
from pendra.server.store.db import Store

HEARTBEAT_INTERVAL_S = 5.0  # the product default
HEARTBEAT_TIMEOUT_S = 15.0
CONNECT_AT_ONCE = 50  # handshakes in flight while the fleet connects
SHARED_MODELS = ("llama3.2:latest", "qwen3:8b", "mistral:7b", "nomic-embed-text:latest")
BACKENDS = [{"kind": "ollama", "endpoint": "http://127.0.0.1:11434", "verified": True,
             "version": "0.32.15", "capabilities": ["chat", "embed"]}]


def model(model_id: str) -> ModelInfo:
    caps = ("embedding",) if "embed" in model_id else ("completion", "tools")
    return ModelInfo(id=model_id, backend="ollama", context_length=8192, capabilities=caps,
                     parameter_size="3B", quantization_level="Q4_K_M", family="llama",
                     size=2_000_000_000, digest=f"sha256:{abs(hash(model_id)):064x}"[:71])


def answer(req: Request) -> list[Frame]:
    data = {"id": "chatcmpl-sim", "object": "chat.completion", "created": int(time.time()),
            "model": req.model, "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
    return [Chunk(id=req.id, data=data),
            End(id=req.id, usage={"prompt_tokens": 5, "completion_tokens": 1},
                finish_reason="stop")]


@dataclass
class SimWorker:
    worker_id: str
    name: str
    private_key: str
    models: list[ModelInfo]
    max_concurrent: int = 8
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _ws: ClientConnection | None = None

    def inventory(self) -> Inventory:
        return Inventory(backends=BACKENDS, models=[m.to_dict() for m in self.models],
                         max_concurrent=self.max_concurrent)

    async def set_models(self, models: list[ModelInfo]) -> None:
        self.models = models
        assert self._ws is not None
        await self._ws.send(dump_frame(self.inventory()))

    async def run(self, ws_url: str, gate: asyncio.Semaphore) -> None:
        while True:
            try:
                async with gate:
                    ws = await connect(ws_url, max_size=MAX_FRAME_BYTES, ping_interval=None)
                break
            except InvalidStatus as exc:
                # Too many unauthenticated sockets from this address: back off and come back,
                # as a real worker does.
                if exc.response.status_code != 503:
                    raise
                await asyncio.sleep(random.uniform(0, float(exc.response.headers.get(
                    "Retry-After", "1"))))
        self._ws = ws
        session = WorkerSession(now=time.monotonic(), worker_id=self.worker_id, name=self.name,
                                private_key=self.private_key, max_concurrent=self.max_concurrent,
                                heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
                                heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)

        async def act(outputs: list[Output]) -> bool:
            for output in outputs:
                if isinstance(output, Close):
                    await ws.close(int(output.reason), output.detail[:100])
                    return False
                if isinstance(output, Frame):
                    await ws.send(dump_frame(output))
                elif isinstance(output, Ready):
                    await ws.send(dump_frame(self.inventory()))
                    self.ready.set()
                elif isinstance(output, Received) and isinstance(output.frame, Request):
                    for frame in answer(output.frame):
                        await ws.send(dump_frame(frame))
            return True

        async def beat() -> None:
            while await act(session.tick(time.monotonic())):
                await asyncio.sleep(max(session.next_tick_at() - time.monotonic(), 0.01))

        beater = asyncio.create_task(beat())
        try:
            async for raw in ws:
                if not await act(session.receive_raw(raw, time.monotonic())):
                    break
        except ConnectionClosed:
            pass
        finally:
            beater.cancel()
            await asyncio.gather(beater, return_exceptions=True)
            await ws.close()


async def enrol_fleet(database_url: str, count: int, prefix: str) -> list[SimWorker]:
    """Enrol ``count`` workers in the control plane's store; each serves the shared models plus one
    of its own."""
    store = await Store.open(database_url)
    fleet = []
    try:
        async with store.session() as session:
            for i in range(count):
                private_key, public_key = signing.generate_keypair()
                name = f"{prefix}-{i:04d}"
                row = await worker_store.enrol_worker(session, name, public_key)
                models = [model(m) for m in SHARED_MODELS] + [model(f"{name}-own:latest")]
                fleet.append(SimWorker(row.id, name, private_key, models))
            await session.commit()
    finally:
        await store.close()
    return fleet


@asynccontextmanager
async def connected(ws_url: str, fleet: list[SimWorker],
                    timeout_s: float = 300) -> AsyncIterator[float]:
    """Connect every worker (yields the seconds it took); disconnect them all on exit."""
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(w.run(ws_url, gate)) for w in fleet]
        try:
            async with asyncio.timeout(timeout_s):
                for worker in fleet:
                    await worker.ready.wait()
            yield time.perf_counter() - started
        finally:
            for task in tasks:
                task.cancel()

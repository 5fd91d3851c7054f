"""An in-memory Hub with scripted workers, for the hub's and the router's unit tests (no sockets).

A ``FakeLink`` stands where the /ws/gpu socket loop would: it attaches a worker to the hub, reads
what the hub queues for it (``next_outgoing``) and answers each request with a script that
delivers frames back (``WorkerLink.deliver``), exactly as the socket loop hands them over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pendra.protocol.frames import (PROTOCOL_VERSION, Cancel, Chunk, End, Error, Frame, Hello,
                                    Request, parse_frame)
from pendra.protocol.inventory import BackendStatus, ModelInfo
from pendra.protocol.session import InventoryUpdated
from pendra.server.hub import Hub, WorkerLink

# Capabilities of a chat model and of an embedding model, in Ollama's vocabulary.
CHAT = ("completion",)
EMBED = ("embedding",)

Script = Callable[["FakeLink", Request], Awaitable[None]]


def new_hub(heartbeat_timeout_s: float = 10.0) -> Hub:
    """A hub whose stall bound (half the heartbeat timeout) is ``heartbeat_timeout_s / 2``."""
    return Hub(heartbeat_interval_s=heartbeat_timeout_s / 4, heartbeat_timeout_s=heartbeat_timeout_s)


def hello(worker_id: str, max_concurrent: int = 1) -> Hello:
    return Hello(protocol_version=PROTOCOL_VERSION, worker_id=worker_id, name="claimed-name",
                 nonce="n", signature="s", max_concurrent=max_concurrent)


def model(model_id: str, capabilities: tuple[str, ...] = CHAT, backend: str = "ollama") -> ModelInfo:
    return ModelInfo(id=model_id, backend=backend, capabilities=capabilities)


def inventory(*models: ModelInfo, max_concurrent: int = 1,
              verified: bool = True) -> InventoryUpdated:
    """An inventory with one Ollama backend (``verified`` or not) serving ``models``."""
    return InventoryUpdated(
        backends=[BackendStatus(kind="ollama", endpoint="http://127.0.0.1:11434", verified=verified)],
        models={m.id: m for m in models}, max_concurrent=max_concurrent)


def attach(hub: Hub, worker_id: str, *models: ModelInfo, max_concurrent: int = 1) -> WorkerLink:
    """A worker attached under its enrolled name ``worker_id`` with its first inventory."""
    link = hub.attach(hello(worker_id, max_concurrent), worker_id)
    link.inventory(inventory(*models, max_concurrent=max_concurrent))
    return link


async def drain(link: WorkerLink, timeout_s: float = 0.05) -> list[Frame]:
    """Frames queued for the worker's socket, until none comes for ``timeout_s``."""
    frames: list[Frame] = []
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                item = await link.next_outgoing()
        except TimeoutError:
            return frames
        frames.append(parse_frame(item) if isinstance(item, str) else item)


def answer(*frames: Callable[[Request], Frame]) -> Script:
    """A script delivering one frame per factory (each given the request)."""
    async def script(fake: FakeLink, req: Request) -> None:
        for make in frames:
            await fake.link.deliver(make(req))
    return script


def chunk(req: Request) -> Frame:
    return Chunk(id=req.id, data={"n": 1})


def end(req: Request) -> Frame:
    return End(id=req.id, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})


def error(status: int, message: str = "it failed", **fields: Any) -> Callable[[Request], Frame]:
    return lambda req: Error(id=req.id, status=status, message=message, **fields)


class FakeLink:
    """One worker on the hub, answering each request it reads with ``script``."""

    def __init__(self, hub: Hub, worker_id: str, *models: ModelInfo, script: Script,
                 max_concurrent: int = 1) -> None:
        self.hub = hub
        self.link = attach(hub, worker_id, *models, max_concurrent=max_concurrent)
        self.script = script
        self.requests: list[Request] = []
        self.cancelled: list[str] = []
        self._task = asyncio.create_task(self._serve(), name=f"fake-link:{worker_id}")

    @property
    def id(self) -> str:
        return self.link.view.id

    async def _serve(self) -> None:
        while not self.link.closed:
            item = await self.link.next_outgoing()
            frame = parse_frame(item) if isinstance(item, str) else item
            if isinstance(frame, Request):
                self.requests.append(frame)
                await self.script(self, frame)
            elif isinstance(frame, Cancel):
                self.cancelled.append(frame.id)

    def disconnect(self, detail: str = "socket closed") -> None:
        self.hub.detach(self.link, detail)

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])  # its own cancellation ends it; ours still propagates

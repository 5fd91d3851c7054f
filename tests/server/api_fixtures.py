"""A real control plane for API tests, and fake workers that speak the real /ws/gpu protocol.

``running_api`` serves ``create_app`` (API only) with uvicorn on 127.0.0.1:0 over a SQLite store in
a temporary folder and hands back its URL, its app (whose store the test may use) and a fresh API
key. ``FakeWorker`` is enrolled through the store, dials ``/ws/gpu`` with websockets, signs the
challenge with its Ed25519 key, sends an inventory, answers pings, and answers every Request by
running a *script* — a coroutine that sends Chunk/End/Error frames, stalls, or drops the socket.
Model operation frames are only recorded (``ops``): the test sends the worker's answers itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pendra import config as cfg
from pendra.backends.base import ModelInfo
from pendra.config import ServerSettings
from pendra.home import Home
from pendra.protocol import signing
from pendra.protocol.frames import (PROTOCOL_VERSION, Cancel, CancelOp, Challenge, Chunk, End,
                                    Error, Frame, Hello, Install, Inventory, Ping, Pong, Request,
                                    Uninstall, dump_frame, parse_frame)
from pendra.server.app import create_app
from pendra.server.connections import EdgeLimits
from pendra.server.serve import serving
from pendra.server.store import workers as worker_store
from polling import eventually
from suite_env import WAIT

# Every bound a test waits on, scaled by PENDRA_TEST_WAIT_SCALE.
TIMEOUT_S = 10 * WAIT
ADMIN_TOKEN = "pdr_admin_test-token"

CHAT_MODEL = ModelInfo(id="llama3.2:latest", backend="ollama", context_length=131072,
                       capabilities=("completion", "tools"), parameter_size="3.2B",
                       quantization_level="Q4_K_M", family="llama", size=2019393189,
                       modified_at="2026-01-02T03:04:05.123456789-07:00")
EMBED_MODEL = ModelInfo(id="nomic-embed-text:latest", backend="ollama", context_length=2048,
                        capabilities=("embedding",), parameter_size="137M",
                        quantization_level="F16", family="nomic-bert", size=274302450)
IMAGE_MODEL = ModelInfo(id="x/z-image-turbo:latest", backend="ollama",
                        capabilities=("image",), parameter_size="6B", quantization_level="FP8")
ALL_MODELS = (CHAT_MODEL, EMBED_MODEL, IMAGE_MODEL)
# A 1x1 transparent PNG: what an image "generation" returns here.
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
           "rkJggg==")
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}

Script = Callable[["FakeWorker", Request], Awaitable[None]]


@dataclass
class Api:
    base_url: str
    app: FastAPI
    settings: ServerSettings
    key: str

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[len("http"):] + "/ws/gpu"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def new_key(self, name: str) -> str:
        """A key made through the running app's key index, as the console and admin API make
        them: usable on the next request."""
        _, raw = await self.app.state.keys.create(name)
        return raw


@asynccontextmanager
async def running_api(tmp_path: Path, **overrides: Any) -> AsyncIterator[Api]:
    """The API (no console) on 127.0.0.1:0 over a fresh SQLite store."""
    home = Home(tmp_path / "home")
    home.ensure()
    fields: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "heartbeat_interval_s": 0.5,
                              "heartbeat_timeout_s": 5.0, "queue_timeout_s": 5.0,
                              "admin_token": ADMIN_TOKEN}
    settings = replace(cfg.load_server(home, {}), **(fields | overrides))
    app = create_app(settings, console=False)
    async with serving(app, settings.host, settings.port,
                       limits=EdgeLimits.of(settings)) as running:
        api = Api(running.base_url, app, settings, "")
        api.key = await api.new_key("tests")
        yield api


# --- scripted answers ------------------------------------------------------------------------------


def completion(model: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
            "usage": USAGE}


def delta(model: str, text: str | None, finish: str | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text} if text else {},
                              "finish_reason": finish}
    return {"id": "chatcmpl-test", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "choices": [choice]}


async def answer(worker: "FakeWorker", req: Request) -> None:
    """The well-behaved worker: answers chat (both ways), embeddings and images."""
    if req.kind == "chat":
        if req.body.get("stream"):
            for word in ("one ", "two ", "three"):
                await worker.send(Chunk(id=req.id, data=delta(req.model, word)))
            await worker.send(Chunk(id=req.id, data=delta(req.model, None, "stop")))
        else:
            await worker.send(Chunk(id=req.id, data=completion(req.model, "hello from "
                                                               + worker.name)))
        await worker.send(End(id=req.id, usage=USAGE, finish_reason="stop"))
    elif req.kind == "embed":
        inputs = req.body["input"] if isinstance(req.body["input"], list) else [req.body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.1 * i, 0.2, 0.3]}
                for i in range(len(inputs))]
        await worker.send(Chunk(id=req.id, data={"object": "list", "data": data,
                                                 "model": req.model,
                                                 "usage": {"prompt_tokens": 4, "total_tokens": 4}}))
        await worker.send(End(id=req.id, usage={"prompt_tokens": 4}))
    elif req.kind == "image":
        await worker.send(Chunk(id=req.id, data={"created": int(time.time()),
                                                 "data": [{"b64_json": PNG_B64}]}))
        await worker.send(End(id=req.id))
    else:
        await worker.send(Error(id=req.id, status=501, kind="unsupported",
                                message=f"{req.kind} is not supported"))


async def drop(worker: "FakeWorker", req: Request) -> None:
    """The worker dies before answering."""
    await worker.disconnect()


def fail_with(status: int, message: str, kind: str = "backend_error") -> Script:
    async def script(worker: "FakeWorker", req: Request) -> None:
        await worker.send(Error(id=req.id, status=status, kind=kind, message=message))
    return script


def stream_forever(interval_s: float = 0.05) -> Script:
    """Streams chunks until the request is cancelled (then the Cancel frame is recorded)."""
    async def script(worker: "FakeWorker", req: Request) -> None:
        n = 0
        while True:
            await worker.send(Chunk(id=req.id, data=delta(req.model, f"w{n} ")))
            n += 1
            await asyncio.sleep(interval_s)
    return script


def drop_after(chunks: int) -> Script:
    """Streams a few chunks, then the worker dies mid-stream."""
    async def script(worker: "FakeWorker", req: Request) -> None:
        for n in range(chunks):
            await worker.send(Chunk(id=req.id, data=delta(req.model, f"w{n} ")))
        await asyncio.sleep(0.05)
        await worker.disconnect()
    return script


def hold(until: asyncio.Event) -> Script:
    """Keeps the request (and so the worker's slot) busy until ``until`` is set."""
    async def script(worker: "FakeWorker", req: Request) -> None:
        await until.wait()
        await answer(worker, req)
    return script


# --- the fake worker -----------------------------------------------------------------------------------


@dataclass
class FakeWorker:
    name: str
    models: tuple[ModelInfo, ...] = ALL_MODELS
    max_concurrent: int = 1
    script: Script = answer
    worker_id: str = ""
    private_key: str = ""
    # The name its hello claims (default: the enrolled one); the control plane shows the enrolled.
    hello_name: str = ""
    # The protocol version its hello speaks (an older worker's, to test that it still works).
    protocol_version: int = PROTOCOL_VERSION
    requests: list[Request] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    # Model operation frames received (install, uninstall, cancel_op); the test answers them.
    ops: list[Frame] = field(default_factory=list)
    _ws: ClientConnection | None = None
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def enrol(self, api: Api) -> None:
        self.private_key, public_key = signing.generate_keypair()
        async with api.app.state.store.session() as session:
            row = await worker_store.enrol_worker(session, self.name, public_key)
            await session.commit()
        self.worker_id = row.id

    async def connect(self, api: Api) -> None:
        """Handshake, send the inventory, and wait until the hub lists this worker's models."""
        self._ws = await connect(api.ws_url, max_size=None)
        challenge = parse_frame(await self._ws.recv())
        assert isinstance(challenge, Challenge)
        signature = signing.sign(self.private_key,
                                 signing.handshake_message(challenge.nonce, self.worker_id))
        await self.send(Hello(protocol_version=self.protocol_version, worker_id=self.worker_id,
                              name=self.hello_name or self.name, nonce=challenge.nonce,
                              signature=signature, max_concurrent=self.max_concurrent))
        welcome = parse_frame(await self._ws.recv())
        assert welcome.type == "welcome", welcome
        await self.send(Inventory(backends=[{"kind": "ollama", "endpoint": "http://fake",
                                             "verified": True, "version": "0.20.0"}],
                                  models=[m.to_dict() for m in self.models],
                                  max_concurrent=self.max_concurrent))
        self._reader = asyncio.create_task(self._read(), name=f"fake-worker:{self.name}")
        hub = api.app.state.hub
        await eventually(lambda: (view := hub.get(self.worker_id)) is not None
                         and len(view.models) >= len(self.models), what=f"{self.name} connected")

    async def send(self, frame: Frame) -> None:
        await self.send_raw(dump_frame(frame))

    async def send_raw(self, text: str) -> None:
        """Send a message as it is: what a misbehaving worker could put on the wire."""
        assert self._ws is not None
        await self._ws.send(text)

    async def disconnect(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def close(self) -> None:
        await self.disconnect()
        for task in [*self._tasks.values(), *([self._reader] if self._reader else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks.values(), *([self._reader] if self._reader else []),
                             return_exceptions=True)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                frame = parse_frame(raw)
                if isinstance(frame, Ping):
                    await self.send(Pong(ts=frame.ts))
                elif isinstance(frame, Request):
                    self.requests.append(frame)
                    self._tasks[frame.id] = asyncio.create_task(self._run(frame))
                elif isinstance(frame, Cancel):
                    self.cancelled.append(frame.id)
                    task = self._tasks.get(frame.id)
                    if task is not None:
                        task.cancel()
                elif isinstance(frame, Install | Uninstall | CancelOp):
                    self.ops.append(frame)
                self._changed.set()
        except ConnectionClosed:
            pass

    async def _run(self, req: Request) -> None:
        try:
            await self.script(self, req)
        except ConnectionClosed:
            pass  # the script dropped the socket on purpose, or the server went away

    async def wait_for(self, check: Callable[[], bool]) -> None:
        """Until ``check()`` holds (bounded)."""
        async with asyncio.timeout(TIMEOUT_S):
            while not check():
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.1)
                except TimeoutError:
                    pass


@asynccontextmanager
async def fleet(api: Api, *workers: FakeWorker) -> AsyncIterator[tuple[FakeWorker, ...]]:
    """Enrol and connect ``workers``; disconnect them all on exit."""
    async with AsyncExitStack() as stack:
        for worker in workers:
            await worker.enrol(api)
            await worker.connect(api)
            stack.push_async_callback(worker.close)
        yield workers


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def b64_json(value: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()

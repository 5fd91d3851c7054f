"""Load shapes shared by the benchmarks: the relays under test, the request bodies, a timed
request, closed-loop clients.

Rules: the baseline is Ollama's own API on the emulator (``/api/chat``, ``/api/embed``) and a
relay's is the OpenAI API (``/chat/completions``, ``/embeddings``) carrying the same body; every
relay (Pendra, or LiteLLM's proxy for comparison) is driven by the same client and the same load
shapes; a closed-loop client sends its next request as soon as its last one ended, one keep-alive
connection per client; any non-200 answer fails the benchmark (a fast error is not a fast answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.client import Connection, HttpError
from bench.deploy import CHAT_MODEL, Deployment

DIRECT_PATH = "/api/chat"
DIRECT_EMBED_PATH = "/api/embed"
PENDRA_PATH = "/api/v1/chat/completions"
PENDRA_EMBED_PATH = "/api/v1/embeddings"
EMBED_MODEL = "nomic-embed-text:latest"
# How each side marks the end of a streamed answer: Ollama's last NDJSON line, OpenAI's SSE sentinel.
NDJSON_END = b'"done":true'
SSE_END = b"data: [DONE]"


@dataclass(frozen=True)
class Relay:
    """A proxy under test in front of the emulator, and where its OpenAI routes are."""

    name: str
    base_url: str
    api_key: str
    chat_path: str
    embed_path: str

    def connection(self) -> Connection:
        return Connection(self.base_url, {"Authorization": f"Bearer {self.api_key}"})


def pendra_relay(pendra: Deployment) -> Relay:
    return Relay("pendra", pendra.base_url, pendra.api_key, PENDRA_PATH, PENDRA_EMBED_PATH)


def messages(text: str = "Say hello in five words") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def chat_body(text: str = "Say hello in five words", *, stream: bool = False) -> dict[str, Any]:
    """The same small chat in both APIs' shape (Ollama's /api/chat and OpenAI's agree here)."""
    return {"model": CHAT_MODEL, "messages": messages(text), "stream": stream}


@dataclass
class Target:
    """Where one side of a comparison sends its requests."""

    label: str
    connect: Callable[[], Connection]
    path: str
    body: dict[str, Any]
    end: bytes = SSE_END  # what the last event of a streamed answer contains


def targets(emulator_url: str, relay: Relay, *, text: str = "Say hello in five words",
            stream: bool = False) -> tuple[Target, Target]:
    """(straight to the emulator, through ``relay``) for the same chat."""
    body = chat_body(text, stream=stream)
    return (Target("direct", lambda: Connection(emulator_url), DIRECT_PATH, body, NDJSON_END),
            Target(relay.name, relay.connection, relay.chat_path, body))


def embed_targets(emulator_url: str, relay: Relay, inputs: int) -> tuple[Target, Target]:
    """(straight to the emulator, through ``relay``) for one batch of ``inputs`` texts; Ollama's
    ``/api/embed`` and OpenAI's ``/embeddings`` take the same ``{"model", "input": [...]}``."""
    body = {"model": EMBED_MODEL,
            "input": [f"passage {i}: the quick brown fox jumps over the lazy dog"
                      for i in range(inputs)]}
    return (Target("direct", lambda: Connection(emulator_url), DIRECT_EMBED_PATH, body),
            Target(relay.name, relay.connection, relay.embed_path, body))


async def timed(conn: Connection, target: Target) -> float:
    started = time.perf_counter()
    status, body = await conn.request("POST", target.path, target.body)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise HttpError(f"{target.label}: {status} {body[:300]!r}")
    return elapsed


async def closed_loop(target: Target, concurrency: int, *, count: int | None = None,
                      duration_s: float | None = None) -> tuple[list[float], float]:
    """``concurrency`` clients sending back to back until ``count`` requests or ``duration_s``.

    Returns every request's latency and the wall time the whole run took.
    """
    latencies: list[float] = []
    remaining = [count if count is not None else 1 << 62]
    started = time.perf_counter()
    deadline = started + duration_s if duration_s is not None else float("inf")

    async def client() -> None:
        conn = target.connect()
        try:
            while remaining[0] > 0 and time.perf_counter() < deadline:
                remaining[0] -= 1
                latencies.append(await timed(conn, target))
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def paired(first: Target, second: Target, concurrency: int,
                 count: int) -> tuple[list[float], list[float], list[float]]:
    """``count`` pairs, each one request to ``first`` then the same to ``second`` on the same
    client, ``concurrency`` clients at once: (first's latencies, second's, per-pair differences).

    Interleaving the two sides makes the difference fair: both see the same moment's load.
    """
    a: list[float] = []
    b: list[float] = []
    diffs: list[float] = []
    remaining = [count]

    async def client() -> None:
        conn_a, conn_b = first.connect(), second.connect()
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                ta = await timed(conn_a, first)
                tb = await timed(conn_b, second)
                a.append(ta)
                b.append(tb)
                diffs.append(tb - ta)
        finally:
            await conn_a.close()
            await conn_b.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return a, b, diffs


async def warm_up(*sides: Target, requests: int = 20) -> None:
    for target in sides:
        await closed_loop(target, 4, count=requests)


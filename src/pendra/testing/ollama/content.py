"""What the emulated models say: deterministic words, tool-call arguments, embeddings, log
probabilities and PNG images, and the test-only steering markers of a prompt.

Steering (never sent by a real client; removed before the reply is built), in the last message:
``[[tokens=N]]`` reply length; ``[[delay=S]]`` seconds before each token; ``[[error-after=N]]`` the
runner dies after N tokens (a trailing ``{"error": …}`` line, §4.2); ``[[load=S]]`` seconds of
"loading the model" before anything is sent, not even headers (as Ollama, §9.2); ``[[stall-after=N]]``
after N tokens the stream goes silent and stays open (a hung runner under a server that still
answers everything else).
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

MARKER = re.compile(r"\[\[(tokens|error-after|delay|load|stall-after)=([\d.]+)\]\]")
# Each image counts as this many prompt tokens (a CLIP embedding per image, §5.3).
IMAGE_TOKENS = 768


@dataclass
class Steering:
    tokens: int | None = None
    error_after: int | None = None
    delay_s: float | None = None
    load_s: float = 0.0
    stall_after: int | None = None


def steering_of(text: str) -> tuple[str, Steering]:
    steer = Steering()
    for kind, value in MARKER.findall(text):
        if kind == "tokens":
            steer.tokens = int(float(value))
        elif kind == "error-after":
            steer.error_after = int(float(value))
        elif kind == "load":
            steer.load_s = float(value)
        elif kind == "stall-after":
            steer.stall_after = int(float(value))
        else:
            steer.delay_s = float(value)
    return MARKER.sub("", text).strip(), steer


def reply_tokens(text: str, count: int | None, images: int = 0) -> list[str]:
    """Deterministic words: 'Echo:', ``[images=N]`` when a vision model was shown N images, and the
    prompt's words, cycled or cut to ``count``."""
    seen = [f"[images={images}]"] if images else []
    base = ["Echo:", *seen] + (text.split()[:40] or ["(nothing)"])
    if count is None:
        return base
    return [base[i % len(base)] for i in range(count)]


def schema_value(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {name: schema_value(props.get(name) or {}) for name in required}
    if kind == "array":
        return [schema_value(schema.get("items") or {})]
    return {"string": "test", "number": 1, "integer": 1, "boolean": True}.get(str(kind), "test")


def tool_call_id(seed: str) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    digest = hashlib.sha256(seed.encode()).digest()
    return "call_" + "".join(alphabet[b % len(alphabet)] for b in digest[:8])


def embedding(text: str, dim: int) -> list[float]:
    """A deterministic L2-normalised vector for ``text``."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def normalise_vector(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def png(width: int, height: int, seed: str) -> bytes:
    """A real, valid PNG (RGB, one colour derived from ``seed``)."""
    r, g, b = hashlib.sha256(seed.encode()).digest()[:3]
    row = b"\x00" + bytes((r, g, b)) * width
    raw = row * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content") or ""
        total += len(str(content).split()) + 4 + IMAGE_TOKENS * len(message.get("images") or [])
    return total


def logprob(piece: str, top: int) -> dict[str, Any]:
    """One generated token's ``Logprob`` (§4.2): ``token`` and a deterministic ``logprob``, and
    with ``top`` > 0 that many alternatives, the token itself first. ``bytes`` is never set, as with
    llama-server (llm/llama_server.go convertLogprobs), and omitted because empty."""
    digest = hashlib.sha256(piece.encode()).digest()
    value = -round(digest[0] / 255 * 2, 6)
    entry: dict[str, Any] = {"token": piece, "logprob": value}
    if top > 0:
        alternatives = [{"token": piece, "logprob": value}]
        for i in range(1, top):
            alternatives.append({"token": f"{piece.strip() or '_'}~{i}",
                                 "logprob": round(value - i - digest[i % len(digest)] / 255, 6)})
        entry["top_logprobs"] = alternatives
    return entry

"""The emulated Ollama's model store: installed models, the pullable registry, and how each model
answers (deterministic text, tool calls, thinking, embeddings, PNG images).

Shapes follow shared/reference/ollama-api.md; nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

LOCAL_TZ = timezone(timedelta(hours=-7))


def local_now() -> datetime:
    return datetime.now(LOCAL_TZ)


def rfc3339(moment: datetime) -> str:
    """Go's time.Time JSON: RFC 3339 with nanoseconds, trailing zeros trimmed."""
    text = moment.isoformat(timespec="microseconds")
    head, _, rest = text.partition(".")
    frac, sign, offset = rest[:6], rest[6:7], rest[7:]
    frac = frac.rstrip("0")
    tz = "Z" if moment.utcoffset() == timedelta(0) and moment.tzinfo is timezone.utc else sign + offset
    return head + ("." + frac if frac else "") + tz


def normalise(name: str) -> str:
    """The display form: ``library`` namespace dropped, ``:latest`` added when no tag."""
    name = name.strip()
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if name.lower().startswith(prefix):
            name = name[len(prefix):]
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def qualified(name: str) -> str:
    name = normalise(name)
    return name if "/" in name.split(":")[0] else f"registry.ollama.ai/library/{name}"


@dataclass
class ModelSpec:
    name: str
    family: str = "llama"
    parameter_size: str = "1B"
    quantization_level: str = "Q4_K_M"
    context_length: int | None = 4096
    capabilities: list[str] = field(default_factory=lambda: ["completion"])
    size: int = 1_000_000_000
    format: str = "gguf"
    embedding_length: int = 2048
    modified_at: datetime = field(default_factory=local_now)
    license: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        known = set(cls.__dataclass_fields__) - {"modified_at"}
        spec = cls(**{k: v for k, v in data.items() if k in known})
        spec.name = normalise(spec.name)
        return spec

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"manifest:{self.name}:{self.quantization_level}".encode()).hexdigest()

    @property
    def architecture(self) -> str:
        return self.family.replace("-", "")

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def details(self, *, with_lengths: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"parent_model": "", "format": self.format, "family": self.family,
                                "families": [self.family], "parameter_size": self.parameter_size,
                                "quantization_level": self.quantization_level}
        if with_lengths and self.context_length:
            data["context_length"] = self.context_length
            data["embedding_length"] = self.embedding_length
        return data

    def model_info(self) -> dict[str, Any]:
        if self.has("image"):
            return {}  # image models skip GGUF inspection (reference §7.1)
        arch = self.architecture
        info: dict[str, Any] = {
            "general.architecture": arch,
            "general.basename": self.name.split(":")[0].split("/")[-1].title(),
            "general.file_type": 15,
            "general.parameter_count": parameter_count(self.parameter_size),
            "general.quantization_version": 2,
            f"{arch}.attention.head_count": 32,
            f"{arch}.attention.head_count_kv": 8,
            f"{arch}.block_count": 28,
            f"{arch}.embedding_length": self.embedding_length,
            f"{arch}.feed_forward_length": 8192,
            f"{arch}.rope.freq_base": 500000,
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.tokens": [],
            "tokenizer.ggml.merges": [],
        }
        if self.context_length:
            info[f"{arch}.context_length"] = self.context_length
        if self.has("embedding"):
            info[f"{arch}.pooling_type"] = 1
        return info


def parameter_count(size: str) -> int:
    match = re.match(r"([\d.]+)\s*([KMB])", size.upper())
    if not match:
        return 0
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}[match.group(2)]
    return int(float(match.group(1)) * scale)


DEFAULT_MODELS: list[dict[str, Any]] = [
    {"name": "llama3.2:latest", "family": "llama", "parameter_size": "3.2B",
     "quantization_level": "Q4_K_M", "context_length": 131072, "capabilities": ["completion", "tools"],
     "size": 2019393189, "embedding_length": 3072, "license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT"},
    {"name": "qwen3:8b", "family": "qwen3", "parameter_size": "8.2B", "quantization_level": "Q4_K_M",
     "context_length": 40960, "capabilities": ["completion", "tools", "thinking"], "size": 5225388164,
     "embedding_length": 4096, "license": "Apache License 2.0"},
    {"name": "nomic-embed-text:latest", "family": "nomic-bert", "parameter_size": "137M",
     "quantization_level": "F16", "context_length": 2048, "capabilities": ["embedding"],
     "size": 274302450, "embedding_length": 768, "license": "Apache License 2.0"},
    {"name": "llava:7b", "family": "llama", "parameter_size": "7B", "quantization_level": "Q4_0",
     "context_length": 32768, "capabilities": ["completion", "vision"], "size": 4733363377,
     "embedding_length": 4096},
    {"name": "x/z-image-turbo:latest", "family": "z-image", "parameter_size": "6B",
     "quantization_level": "FP8", "context_length": None, "capabilities": ["image"],
     "size": 12_000_000_000, "format": "safetensors"},
]

# Pullable from the emulated registry; sizes are the real ones, downloads are simulated.
REGISTRY: list[dict[str, Any]] = [
    {"name": "gemma3:1b", "family": "gemma3", "parameter_size": "999.89M", "quantization_level": "Q4_K_M",
     "context_length": 32768, "capabilities": ["completion"], "size": 815319791, "embedding_length": 1152},
    {"name": "qwen2.5:0.5b", "family": "qwen2", "parameter_size": "494.03M", "quantization_level": "Q4_K_M",
     "context_length": 32768, "capabilities": ["completion", "tools"], "size": 397821319,
     "embedding_length": 896},
    {"name": "all-minilm:latest", "family": "bert", "parameter_size": "23M", "quantization_level": "F16",
     "context_length": 512, "capabilities": ["embedding"], "size": 45960996, "embedding_length": 384},
    {"name": "llama3.2:1b", "family": "llama", "parameter_size": "1.2B", "quantization_level": "Q8_0",
     "context_length": 131072, "capabilities": ["completion", "tools"], "size": 1321098329,
     "embedding_length": 2048},
    {"name": "mistral:7b", "family": "llama", "parameter_size": "7.2B", "quantization_level": "Q4_K_M",
     "context_length": 32768, "capabilities": ["completion", "tools"], "size": 4372812000,
     "embedding_length": 4096},
    {"name": "phi4-mini:latest", "family": "phi3", "parameter_size": "3.8B", "quantization_level": "Q4_K_M",
     "context_length": 131072, "capabilities": ["completion", "tools"], "size": 2491876774,
     "embedding_length": 3072},
    {"name": "nomic-embed-text:v1.5", "family": "nomic-bert", "parameter_size": "137M",
     "quantization_level": "F16", "context_length": 2048, "capabilities": ["embedding"],
     "size": 274302450, "embedding_length": 768},
    {"name": "x/flux2-klein:latest", "family": "flux2", "parameter_size": "4B", "quantization_level": "FP8",
     "context_length": None, "capabilities": ["image"], "size": 9_000_000_000, "format": "safetensors"},
]


def layers_for(spec: ModelSpec) -> list[tuple[str, int]]:
    """(digest, size) per layer in manifest order, config blob last; sizes sum to the model size."""
    weights = max(spec.size - 1429 - 96 - 487, 1)
    parts = [("model", weights), ("template", 1429), ("params", 96), ("config", 487)]
    return [("sha256:" + hashlib.sha256(f"{spec.name}:{kind}".encode()).hexdigest(), size)
            for kind, size in parts]


# --- answering ------------------------------------------------------------------------------------------

# Test-only steering in the last message, removed before the reply is built: [[tokens=N]] reply
# length, [[delay=S]] seconds before each token, [[error-after=N]] the runner dies after N tokens,
# [[load=S]] seconds of "loading the model" before anything is sent (not even headers, as Ollama),
# [[stall-after=N]] after N tokens the stream goes silent and stays open (a hung runner under a
# server that still answers everything else).
MARKER = re.compile(r"\[\[(tokens|error-after|delay|load|stall-after)=([\d.]+)\]\]")


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


def reply_tokens(text: str, count: int | None) -> list[str]:
    """Deterministic words: 'Echo:' and the prompt's words, cycled or cut to ``count``."""
    base = ["Echo:"] + (text.split()[:40] or ["(nothing)"])
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
        total += len(str(content).split()) + 4 + 768 * len(message.get("images") or [])
    return total


def json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

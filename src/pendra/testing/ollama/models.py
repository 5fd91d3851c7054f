"""The emulated Ollama's models: what one model is (``ModelSpec``: details, model_info,
capabilities), the models installed by default, the pullable registry and the layers a pull
downloads.

Shapes follow shared/reference/ollama-api.md (§3.1 details, §3.2 model_info and capabilities, §3.5
layers); nothing here touches the network. Names are matched case-insensitively and shown in their
shortest form, ``:latest`` added (§1.3).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pendra.testing.ollama.wire import local_now


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

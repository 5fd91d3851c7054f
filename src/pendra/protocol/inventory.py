"""What a worker serves, as the strict, bounded values both ends of /ws/gpu share.

The worker builds these from discovery, the ``inventory`` frame carries them, and the hub, the
API, installs and the console read them: one definition, checked where it is made (the worker's
discovery skips what does not fit) and again where it enters the control plane (``parse_frame``,
strict JSON: a string is never a number, unknown fields are refused).

Rules:
- Every string has a length bound and every list a count bound, so no worker can make a page or
  ``GET /models`` carry megabytes, whatever its backend reports.
- A worker offers at most ``MAX_MODELS`` models and ``MAX_BACKENDS`` backends; the worker itself
  trims to those bounds (``cap_models``) so that a host with too many models still connects.
- ``ModelInfo.types`` is the one mapping from backend capabilities to the public ``?type=``
  categories.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from pendra.protocol.peer_text import ClippedShort, ClippedText

# Models one worker may offer: a very large Ollama library has a few hundred.
MAX_MODELS = 2000
# Backends one worker may report (one per kind, plus explicitly listed endpoints).
MAX_BACKENDS = 16
# Capabilities of one model or backend (Ollama has under ten today).
MAX_CAPABILITIES = 32
# Endpoints one backend may list as tried in a discovery pass.
MAX_TRIED = 8

ModelId = Annotated[str, Field(min_length=1, max_length=256)]
Kind = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")]
# Informational metadata (sizes, quantisation, family, versions, digests): clipped, not refused.
Short = ClippedShort
Url = Annotated[str, Field(max_length=512)]
Word = Annotated[str, Field(min_length=1, max_length=64)]
# Why a backend is not verified: one sentence per endpoint tried, clipped.
Reason = ClippedText
# A context window beyond a hundred million tokens is not a real model's.
ContextLength = Annotated[int, Field(ge=1, le=100_000_000)]
# A petabyte: larger is not a model on one host's disk.
Bytes = Annotated[int, Field(ge=0, le=2**50)]

_STRICT = ConfigDict(extra="forbid")


def model_types(capabilities: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The public ``?type=`` categories for backend capabilities (Ollama's vocabulary)."""
    caps = set(capabilities)
    types: list[str] = []
    if "completion" in caps:
        types.append("chat")
    if "embedding" in caps:
        types.append("embedding")
    if "image" in caps:
        types.append("image")
    if "audio" in caps:
        types.append("transcription")
    if "vision" in caps:
        types.append("ocr")
    return tuple(types)


@dataclass(frozen=True, config=_STRICT)
class ModelInfo:
    """One model a backend serves, with the metadata discovery found."""

    id: ModelId  # the name clients use, exactly as the backend lists it ("llama3.2:latest")
    backend: Kind  # backend kind, e.g. "ollama"
    context_length: ContextLength | None = None
    # Ollama's vocabulary: completion, tools, vision, embedding, image, thinking, ...
    capabilities: Annotated[tuple[Word, ...], Field(max_length=MAX_CAPABILITIES)] = ()
    parameter_size: Short = ""
    quantization_level: Short = ""
    format: Short = ""
    family: Short = ""
    size: Bytes = 0  # bytes on disk
    digest: Short = ""
    modified_at: Short = ""  # as the backend reports it (Ollama: RFC 3339 with nanoseconds)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "backend": self.backend, "context_length": self.context_length,
                "capabilities": list(self.capabilities), "parameter_size": self.parameter_size,
                "quantization_level": self.quantization_level, "format": self.format,
                "family": self.family, "size": self.size, "digest": self.digest,
                "modified_at": self.modified_at}

    @property
    def types(self) -> tuple[str, ...]:
        """The public ``?type=`` categories this model serves (chat, embedding, image, ...)."""
        return model_types(self.capabilities)


@dataclass(frozen=True, config=_STRICT)
class BackendStatus:
    """What discovery knows about one backend: where it looked, whether it is verified, why not."""

    kind: Kind
    endpoint: Url  # the endpoint in use, or the last one tried
    verified: bool
    version: Short = ""
    reason: Reason = ""  # why it is not verified (empty when verified)
    tried: Annotated[tuple[Url, ...], Field(max_length=MAX_TRIED)] = ()  # this pass, in order
    # chat, embed, image, transcribe, install, uninstall
    capabilities: Annotated[tuple[Word, ...], Field(max_length=MAX_CAPABILITIES)] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "endpoint": self.endpoint, "verified": self.verified,
                "version": self.version, "reason": self.reason, "tried": list(self.tried),
                "capabilities": list(self.capabilities)}


def cap_models(models: list[ModelInfo]) -> list[ModelInfo]:
    """At most ``MAX_MODELS`` of ``models``, in order (the worker offers no more than that)."""
    return models[:MAX_MODELS]

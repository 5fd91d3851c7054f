"""The one interface every inference backend implements, and the values it trades in.

Requests and responses cross this interface in **OpenAI shapes** (plain dicts, exactly what the
public API accepts and returns), so the worker runner and the control plane never learn a backend's
native dialect; each backend translates at its own edge. Failures are the typed errors of
``pendra.errors`` (``BackendUnavailable``, ``BackendRejected``, ``ModelNotFound``,
``UnsupportedOperation``, ``InstallFailed``). Cancelling the awaiting task aborts the backend call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ModelInfo:
    """One model a backend can serve, with the metadata discovery found."""

    id: str  # the name clients use, exactly as the backend lists it (e.g. "llama3.2:latest")
    backend: str  # backend kind, e.g. "ollama"
    context_length: int | None = None
    capabilities: tuple[str, ...] = ()  # Ollama vocabulary: completion, tools, vision, embedding, ...
    parameter_size: str = ""
    quantization_level: str = ""
    format: str = ""
    family: str = ""
    size: int = 0  # bytes on disk
    digest: str = ""
    modified_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["capabilities"] = list(self.capabilities)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelInfo":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["capabilities"] = tuple(values.get("capabilities") or ())
        return cls(**values)

    @property
    def types(self) -> tuple[str, ...]:
        """The public ``?type=`` categories this model serves (chat, embedding, image, ...)."""
        return model_types(self.capabilities)


def model_types(capabilities: tuple[str, ...] | list[str]) -> tuple[str, ...]:
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


@dataclass(frozen=True)
class BackendStatus:
    """What discovery knows about one backend: where it looked, whether it is verified, and why not."""

    kind: str
    endpoint: str  # the endpoint in use, or the last one tried
    verified: bool
    version: str = ""
    reason: str = ""  # why it is not verified (empty when verified)
    tried: tuple[str, ...] = ()  # every endpoint tried this pass, in order
    capabilities: tuple[str, ...] = ()  # chat, embed, image, transcribe, install, uninstall

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tried"] = list(self.tried)
        data["capabilities"] = list(self.capabilities)
        return data


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class InstallProgress:
    """One honest overall figure for a pull: bytes done / bytes total across layers."""

    status: str
    completed: int = 0
    total: int = 0


ProgressCallback = Callable[[InstallProgress], Awaitable[None] | None]


@dataclass
class ChatResult:
    """A chat in progress: iterate ``chunks`` for OpenAI dicts; ``usage`` is final once exhausted.

    With ``stream`` true each item is a ``chat.completion.chunk`` (the usage chunk included only
    when the client asked via ``stream_options.include_usage``); otherwise exactly one
    ``chat.completion`` object is yielded.
    """

    chunks: AsyncIterator[dict[str, Any]]
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None


@runtime_checkable
class Backend(Protocol):
    """An inference backend on the worker's host."""

    kind: str

    async def verify(self, endpoint: str) -> BackendStatus:
        """Check that ``endpoint`` really is this kind of backend (never raises for a bad peer)."""
        ...

    async def list_models(self) -> list[ModelInfo]:
        """Every model the verified endpoint serves, with metadata."""
        ...

    async def chat(self, model: ModelInfo, body: dict[str, Any]) -> ChatResult:
        """Run an OpenAI chat completion request (``body`` as the client sent it)."""
        ...

    async def embed(self, model: ModelInfo, body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        """Run an OpenAI embeddings request; returns the OpenAI response and its usage."""
        ...

    async def generate_image(self, model: ModelInfo,
                             body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        """Run an OpenAI images/generations request."""
        ...

    async def transcribe(self, model: ModelInfo, body: dict[str, Any]) -> dict[str, Any]:
        ...

    async def install(self, model: str, progress: ProgressCallback) -> None:
        """Install ``model`` (backend-native name/tag), reporting progress; raises InstallFailed."""
        ...

    async def uninstall(self, model: str) -> None:
        """Remove ``model``; raises ModelNotFound when it is not installed."""
        ...

    async def aclose(self) -> None:
        ...

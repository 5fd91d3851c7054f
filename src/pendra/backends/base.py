"""The one interface every inference backend implements, and the values it trades in.

Requests and responses cross this interface in **OpenAI shapes** (plain dicts, exactly what the
public API accepts and returns), so the worker runner and the control plane never learn a backend's
native dialect; each backend translates at its own edge. Failures are the typed errors of
``pendra.errors`` (``BackendUnavailable``, ``BackendRejected``, ``ModelNotFound``,
``UnsupportedOperation``, ``InstallFailed``). Cancelling the awaiting task aborts the backend call.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# What a backend reports about itself and its models is the protocol's inventory, defined once.
from pendra.protocol.inventory import BackendStatus, ModelInfo, model_types

__all__ = ["Backend", "BackendStatus", "ChatResult", "InstallProgress", "ModelInfo",
           "ProgressCallback", "Usage", "model_types", "system_fingerprint"]


def system_fingerprint(backend_kind: str, backend_version: str, model: ModelInfo) -> str:
    """OpenAI's ``system_fingerprint`` for answers of ``model``: ``fp_`` and 12 hex digits of a
    hash of what decides how the model runs as far as the worker knows it (the backend's kind and
    version, the model's id and digest). The same model on the same backend build always gives
    the same value; it changes when either is upgraded or the model is re-pulled. Never random."""
    seed = f"{backend_kind}\0{backend_version}\0{model.id}\0{model.digest}"
    return "fp_" + hashlib.sha256(seed.encode()).hexdigest()[:12]


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
    """A chat or a text completion in progress: iterate ``chunks`` for OpenAI dicts; ``usage`` and
    ``finish_reason`` are final once it is exhausted.

    With ``stream`` true each item is a ``chat.completion.chunk`` (``chat``) or a
    ``text_completion`` chunk (``complete``), the usage chunk included only when the client asked
    via ``stream_options.include_usage``; otherwise exactly one ``chat.completion`` or
    ``text_completion`` object is yielded.
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

    async def complete(self, model: ModelInfo, body: dict[str, Any]) -> ChatResult:
        """Run an OpenAI legacy completions request (``prompt``, no chat template); the items are
        ``text_completion`` objects. UnsupportedOperation where the backend has no raw
        completion."""
        ...

    async def embed(self, model: ModelInfo, body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        """Run an OpenAI embeddings request; returns the OpenAI response and its usage."""
        ...

    async def generate_image(self, model: ModelInfo,
                             body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        """Run an OpenAI images/generations request."""
        ...

    async def transcribe(self, model: ModelInfo,
                         body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        """Run a transcription (``body`` as protocol/transcription.py's ``job_body`` writes it);
        returns that module's answer (``json_answer``/``text_answer``) and the usage the backend
        reported (none when it reports none)."""
        ...

    async def install(self, model: str, progress: ProgressCallback) -> None:
        """Install ``model`` (backend-native name/tag), reporting progress; raises InstallFailed.

        The backend owns the progress figure: ``completed`` never goes backwards and ``total`` is
        never below it (nothing downstream corrects it)."""
        ...

    async def uninstall(self, model: str) -> None:
        """Remove ``model``; raises ModelNotFound when it is not installed."""
        ...

    async def aclose(self) -> None:
        ...

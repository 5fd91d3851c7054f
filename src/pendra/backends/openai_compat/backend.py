"""OpenAICompatBackend: the Backend interface over one verified OpenAI-compatible server.

Each kind (vLLM, LM Studio, the generic backend) adds only ``discover``: how it proves the endpoint
is that kind and which models it serves. Everything else is shared:

- ``verify`` runs ``discover``; when it succeeds the endpoint becomes the one this backend serves and
  the models it found are what ``list_models`` returns next (a discovery pass verifies, then lists).
  A peer that is not this kind (``NotThisBackend``) or does not answer is rejected with a reason;
  ``verify`` never raises for a bad peer.
- Chat goes to ``POST /v1/chat/completions`` and embeddings to ``POST /v1/embeddings`` with the body
  unchanged except the model name (passthrough.py). A chat stream is bounded by ``limits`` (first
  token, then stall: see client.py).
- Image generation and transcription are not served by these backends (``UnsupportedOperation``),
  and no model of theirs advertises them. Install and uninstall are refused with the reason unless
  a kind overrides them (LM Studio installs).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from pendra.backends.base import (BackendStatus, ChatResult, ModelInfo, ProgressCallback, Usage)
from pendra.backends.openai_compat import passthrough
from pendra.backends.openai_compat.client import OpenAICompatClient, StreamLimits
from pendra.errors import BackendError, BackendRejected, BackendUnavailable, UnsupportedOperation
from pendra.protocol.peer_text import peer_text

log = logging.getLogger(__name__)

# Words in a model id that mark an embedding model when the server does not say (vLLM's and most
# generic servers' /v1/models do not): nomic-embed-text, bge-m3, e5-mistral, gte-qwen, …
_EMBEDDING_ID = re.compile(r"(embed|(^|[/_-])(bge|e5|gte|minilm|mpnet)([/_.-]|$))", re.IGNORECASE)
# "Llama-3.1-70B-Instruct" → 70B, "Mixtral-8x7B" → 8x7B, "qwen2.5-0.5b" → 0.5B.
_PARAMETER_SIZE = re.compile(r"(?<![a-z0-9.])((?:\d+x)?\d+(?:\.\d+)?)[bm](?![a-z0-9])",
                             re.IGNORECASE)


def capabilities_from_id(model_id: str) -> tuple[str, ...]:
    """What a model serves, guessed from its id when the server does not say."""
    return ("embedding",) if _EMBEDDING_ID.search(model_id) else ("completion",)


def parameter_size_from_id(model_id: str) -> str:
    found = _PARAMETER_SIZE.findall(model_id.rsplit("/", 1)[-1].replace("_", "-"))
    if not found:
        return ""
    unit = "M" if re.search(re.escape(found[-1]) + "m", model_id, re.IGNORECASE) else "B"
    return f"{found[-1].upper()}{unit}"


class NotThisBackend(Exception):
    """The endpoint answered, but it is not this kind of backend; the message says why."""


class OpenAICompatBackend:
    kind = "openai"
    display = "OpenAI-compatible server"
    capabilities: tuple[str, ...] = ("chat", "embed")

    def __init__(self, *, kind: str | None = None, api_key: str = "",
                 limits: StreamLimits | None = None) -> None:
        if kind is not None:
            self.kind = kind
        self.api_key = api_key
        self.limits = limits
        self.client: OpenAICompatClient | None = None
        self.version = ""
        self._models: list[ModelInfo] = []

    async def discover(self, client: OpenAICompatClient) -> tuple[str, list[ModelInfo]]:
        """Prove ``client``'s endpoint is this kind (else ``NotThisBackend`` or a ``BackendError``)
        and return its version and models."""
        raise NotImplementedError

    def _require(self) -> OpenAICompatClient:
        if self.client is None:
            raise BackendUnavailable(f"{self.display} is not connected on this worker")
        return self.client

    async def verify(self, endpoint: str) -> BackendStatus:
        endpoint = endpoint.rstrip("/")
        active = self.client is not None and self.client.base_url == endpoint
        client = (self.client if active and self.client is not None
                  else OpenAICompatClient(endpoint, name=self.display, api_key=self.api_key))
        try:
            version, models = await self.discover(client)
        except (NotThisBackend, BackendError) as exc:
            if not active:
                await client.aclose()
            reason = exc.message if isinstance(exc, BackendError) else str(exc)
            return BackendStatus(self.kind, endpoint, False, reason=reason)
        if not active:
            if self.client is not None:
                await self.client.aclose()
            self.client = client
        self.version = version
        self._models = models
        return BackendStatus(self.kind, endpoint, True, version=version,
                             capabilities=self.capabilities)

    async def list_models(self) -> list[ModelInfo]:
        self._require()
        return list(self._models)

    def _requested(self, model: ModelInfo, body: dict[str, Any]) -> str:
        requested = body.get("model")
        return requested if isinstance(requested, str) and requested else model.id

    async def chat(self, model: ModelInfo, body: dict[str, Any]) -> ChatResult:
        client = self._require()
        native = passthrough.chat_request(body, model.id)
        name = self._requested(model, body)
        result = ChatResult(chunks=_empty())
        if not body.get("stream"):
            async def whole() -> AsyncIterator[dict[str, Any]]:
                answer = await client.request_json("POST", "/v1/chat/completions", native)
                data, result.usage, result.finish_reason = passthrough.completion(
                    answer, model=name, name=self.display)
                yield data

            result.chunks = whole()
            return result
        relay = passthrough.ChunkRelay(model=name, wants_usage=passthrough.client_wants_usage(body),
                                       name=self.display)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for event in client.stream("/v1/chat/completions", native, limits=self.limits):
                out = relay.feed(event)
                if out is not None:
                    yield out
            if relay.finish_reason is None:
                raise BackendRejected(f"{self.display} closed the stream before it was done",
                                      status=502)
            result.usage = relay.usage
            result.finish_reason = relay.finish_reason

        result.chunks = chunks()
        return result

    async def embed(self, model: ModelInfo, body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        native = dict(body)
        native["model"] = model.id
        answer = await self._require().request_json("POST", "/v1/embeddings", native)
        return passthrough.embeddings(answer, model=self._requested(model, body),
                                      name=self.display)

    async def generate_image(self, model: ModelInfo,
                             body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        raise UnsupportedOperation(f"image generation is not supported by the {self.display} "
                                   "backend")

    async def transcribe(self, model: ModelInfo, body: dict[str, Any]) -> dict[str, Any]:
        raise UnsupportedOperation(f"audio transcription is not supported by the {self.display} "
                                   "backend")

    async def install(self, model: str, progress: ProgressCallback) -> None:
        raise UnsupportedOperation(f"the {self.display} backend cannot install models: "
                                   f"{self.no_install_reason()}")

    async def uninstall(self, model: str) -> None:
        raise UnsupportedOperation(f"the {self.display} backend cannot remove models: "
                                   f"{self.no_uninstall_reason()}")

    def no_install_reason(self) -> str:
        return "it serves the models it was started with"

    def no_uninstall_reason(self) -> str:
        return self.no_install_reason()

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None


async def _empty() -> AsyncIterator[dict[str, Any]]:
    return
    yield  # pragma: no cover


def model_info(kind: str, **fields: Any) -> ModelInfo | None:
    """A ModelInfo, or None (with a warning) when what the server said does not fit the protocol's
    bounds (an id of over 256 characters, an impossible context length): one odd model never keeps
    the worker from connecting."""
    try:
        return ModelInfo(backend=kind, **fields)
    except (ValidationError, TypeError, ValueError) as exc:
        log.warning("%s: leaving out model %s, whose metadata Pendra cannot carry: %s", kind,
                    peer_text(str(fields.get("id"))), peer_text(str(exc).splitlines()[0]))
        return None


def positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

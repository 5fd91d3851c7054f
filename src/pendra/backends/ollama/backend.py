"""OllamaBackend: the Backend interface over one verified Ollama endpoint.

Chat goes to native ``/api/chat`` and legacy completions to ``/api/generate`` (one call per choice),
each with ``options.num_ctx`` injected (see translate.py, completion.py); embeddings to
``/api/embed``, images to ``/api/generate`` and transcriptions to ``/v1/audio/transcriptions``
(v0.20.0+: Ollama has no native route for them) without injection; installs stream ``/api/pull``
progress as one overall figure (``PullProgress``, where Ollama's stream is read, is the one place
that keeps it from going backwards); removals use ``DELETE /api/delete``. A chat stream is bounded
by ``limits`` (first token, then stall: see client.py); a pull is not, because Ollama may verify a
large blob for minutes without a line.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from pendra.backends.base import (BackendStatus, ChatResult, InstallProgress, ModelInfo,
                                  ProgressCallback, Usage, system_fingerprint)
from pendra.backends.ollama import completion, discovery, translate
from pendra.backends.ollama.client import OllamaClient, StreamLimits
from pendra.backends.ollama.version import (IMAGE_GENERATION_SINCE, IMAGE_GENERATION_UNTIL,
                                            LOGPROBS_SINCE, TRANSCRIPTION_SINCE, format_version,
                                            has_image_generation, has_logprobs, has_transcription)
from pendra.protocol.transcription import decode_job, json_answer, reported_usage, text_answer
from pendra.errors import (BackendError, BackendRejected, BackendUnavailable, InstallFailed,
                           ModelNotFound, UnsupportedOperation)


class PullProgress:
    """Aggregates per-layer pull lines into bytes done / bytes total that never go backwards.

    Ollama's figures may go back (a layer retried, a new layer's ``total`` not yet known); each
    layer keeps its largest figures and the overall ``completed`` its largest sum, and ``total``
    is never below ``completed``. The runner and the control plane relay what this says."""

    def __init__(self) -> None:
        self._layers: dict[str, tuple[int, int]] = {}
        self._completed = 0

    def update(self, line: dict[str, Any]) -> InstallProgress:
        digest = line.get("digest")
        if digest:
            total = int(line.get("total") or 0)
            completed = int(line.get("completed") or 0)
            old_total, old_completed = self._layers.get(digest, (0, 0))
            self._layers[digest] = (max(total, old_total), max(completed, old_completed))
        total = sum(t for t, _ in self._layers.values())
        self._completed = max(self._completed, sum(c for _, c in self._layers.values()))
        return InstallProgress(str(line.get("status", "")), self._completed, max(total, self._completed))


# What Ollama's /v1/audio/transcriptions answers, and the largest file it takes (reference §6.7).
OLLAMA_TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")
OLLAMA_MAX_AUDIO_BYTES = 25 * 1000 * 1000

# How old an /api/tags answer from verification may be for list_models to use it instead of
# asking again (a discovery pass lists right after it verifies).
TAGS_FRESH_S = 1.0


class OllamaBackend:
    kind = "ollama"

    def __init__(self, *, num_ctx_cap: int = 0, limits: StreamLimits | None = None) -> None:
        self.num_ctx_cap = num_ctx_cap
        self.limits = limits
        self.client: OllamaClient | None = None
        self.version = ""
        self._cache: dict[str, ModelInfo] = {}
        # /api/tags as the last verification read it, and when (monotonic seconds).
        self._tags: tuple[float, dict[str, Any]] | None = None

    def _require(self) -> OllamaClient:
        if self.client is None:
            raise BackendUnavailable("Ollama is not connected on this worker")
        return self.client

    async def verify(self, endpoint: str) -> BackendStatus:
        """Verify ``endpoint``; when it verifies it becomes the endpoint this backend serves."""
        endpoint = endpoint.rstrip("/")
        active = self.client is not None and self.client.base_url == endpoint
        client = self.client if active and self.client is not None else OllamaClient(endpoint)
        status, tags = await discovery.verify(client)
        self._tags = (time.monotonic(), tags) if tags is not None else None
        if status.verified:
            if not active:
                if self.client is not None:
                    await self.client.aclose()
                self.client = client
                self._cache.clear()
            self.version = status.version
        elif not active:
            await client.aclose()
        return status

    async def list_models(self) -> list[ModelInfo]:
        # The tags verification has just read (a discovery pass verifies, then lists), used once;
        # anything older is asked for again.
        read, self._tags = self._tags, None
        tags = read[1] if read is not None and time.monotonic() - read[0] < TAGS_FRESH_S else None
        return await discovery.list_models(self._require(), self._cache, self.version, tags)

    def num_ctx_for(self, model: ModelInfo) -> int | None:
        """The context to inject: discovery's, capped if configured; stable per model."""
        if not model.context_length:
            return None
        if self.num_ctx_cap:
            return min(model.context_length, self.num_ctx_cap)
        return model.context_length

    async def chat(self, model: ModelInfo, body: dict[str, Any]) -> ChatResult:
        client = self._require()
        native = translate.chat_request(body, model.id, num_ctx=self.num_ctx_for(model))
        stream = bool(body.get("stream"))
        include_usage = translate.include_usage(body)
        if translate.wants_logprobs(body):
            self._require_logprobs()
        translator = translate.ChatTranslator(model=str(body.get("model") or model.id),
                                              stream=stream, include_usage=include_usage,
                                              logprobs=translate.wants_logprobs(body),
                                              fingerprint=self.fingerprint(model))
        result = ChatResult(chunks=_empty())

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for line in client.stream("/api/chat", native, limits=self.limits):
                for chunk in translator.feed(line):
                    yield chunk
            if translator.finish_reason is None:
                raise BackendRejected("Ollama closed the stream before it was done", status=502)
            result.usage = translator.usage
            result.finish_reason = translator.finish_reason
            if not stream:
                yield translator.completion()

        result.chunks = chunks()
        return result

    async def complete(self, model: ModelInfo, body: dict[str, Any]) -> ChatResult:
        """A legacy completion: one ``/api/generate`` per choice, one after the other (the request
        holds one of the worker's slots, so it runs one generation at a time), streamed back as
        they come (completion.py has the translation rules)."""
        client = self._require()
        natives = completion.generate_requests(body, model.id, num_ctx=self.num_ctx_for(model),
                                               capabilities=model.capabilities)
        if (completion.logprobs_of(body) is not None
                or completion.candidates_per_prompt(body) > completion.choices_per_prompt(body)):
            self._require_logprobs()  # asked for, or best_of ranks by them
        prompts = completion.prompts_of(body)
        per_prompt = len(natives) // len(prompts)
        translator = completion.translator_for(body, str(body.get("model") or model.id),
                                               fingerprint=self.fingerprint(model))
        result = ChatResult(chunks=_empty())

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            for index, native in enumerate(natives):
                for chunk in translator.begin(index, prompts[index // per_prompt]):
                    yield chunk
                finished = False
                async with aclosing(client.stream("/api/generate", native,
                                                  limits=self.limits)) as lines:
                    async for line in lines:
                        for chunk in translator.feed(line):
                            yield chunk
                        finished = finished or bool(line.get("done"))
                if not finished:
                    raise BackendRejected("Ollama closed the stream before it was done",
                                          status=502)
            for chunk in translator.closing():
                yield chunk
            result.usage = translator.usage
            result.finish_reason = translator.finish_reason
            if not translator.stream:
                yield translator.completion()

        result.chunks = chunks()
        return result

    def _require_logprobs(self) -> None:
        """An Ollama older than LOGPROBS_SINCE would silently answer without log probabilities."""
        if not has_logprobs(self.version):
            raise UnsupportedOperation(
                f"log probabilities are not supported by this Ollama version ({self.version}); "
                f"they exist from {format_version(LOGPROBS_SINCE)}")

    def fingerprint(self, model: ModelInfo) -> str:
        return system_fingerprint(self.kind, self.version, model)

    async def embed(self, model: ModelInfo, body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        native = translate.embed_request(body, model.id)
        answer = await self._require().request_json("POST", "/api/embed", native)
        return translate.embed_response(answer, body, str(body.get("model") or model.id))

    async def generate_image(self, model: ModelInfo, body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        if not has_image_generation(self.version):
            raise UnsupportedOperation(
                f"image generation is not supported by this Ollama version ({self.version}); it "
                f"exists from {format_version(IMAGE_GENERATION_SINCE)} until "
                f"{format_version(IMAGE_GENERATION_UNTIL)} (exclusive)")
        if "image" not in model.capabilities:
            raise BackendRejected(f"model '{model.id}' does not generate images", status=400)
        images = []
        for native in translate.image_requests(body, model.id):  # Ollama makes one per call
            answer = await self._require().request_json("POST", "/api/generate", native)
            if not isinstance(answer, dict) or not answer.get("image"):
                raise BackendRejected("Ollama returned no image", status=502)
            images.append(answer)
        return translate.image_response(images), Usage()

    async def transcribe(self, model: ModelInfo,
                         body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        """Ollama's OpenAI-compatible ``/v1/audio/transcriptions`` (v0.20.0+): a multipart form
        of model, file, response_format, language and prompt; it transcribes at temperature 0
        (a client's ``temperature`` is not sent) and answers json, text or verbose_json only."""
        if not has_transcription(self.version):
            raise UnsupportedOperation(
                f"transcription is not supported by this Ollama version ({self.version}); it "
                f"exists from {format_version(TRANSCRIPTION_SINCE)}")
        if "audio" not in model.capabilities:
            raise BackendRejected(f"model '{model.id}' does not take audio", status=400)
        try:
            job = decode_job(body)
        except ValueError as exc:
            raise BackendRejected(str(exc), status=400) from exc
        if job.response_format not in OLLAMA_TRANSCRIPTION_FORMATS:
            raise BackendRejected(
                f"Ollama transcribes into {', '.join(OLLAMA_TRANSCRIPTION_FORMATS)} only, not "
                f"{job.response_format}", status=400)
        if len(job.audio) > OLLAMA_MAX_AUDIO_BYTES:
            raise BackendRejected(f"Ollama takes audio files of at most {OLLAMA_MAX_AUDIO_BYTES} "
                                  f"bytes; this one is {len(job.audio)}", status=413)
        fields = {"model": model.id, "response_format": job.response_format}
        fields.update({name: value for name, value in (("language", job.language),
                                                       ("prompt", job.prompt)) if value is not None})
        content = await self._require().post_form(
            "/v1/audio/transcriptions", fields,
            {"file": (job.filename, job.audio, job.content_type)})
        if job.response_format == "text":
            return text_answer(content.decode("utf-8", "replace")), Usage()
        try:
            answer = json.loads(content)
        except ValueError as exc:
            raise BackendRejected("Ollama's transcription did not answer JSON", status=502) from exc
        if not isinstance(answer, dict):
            raise BackendRejected("Ollama's transcription did not answer a JSON object", status=502)
        counts = reported_usage(answer)
        return json_answer(answer), Usage(counts.get("prompt_tokens", 0),
                                          counts.get("completion_tokens", 0))

    async def install(self, model: str, progress: ProgressCallback) -> None:
        client = self._require()
        aggregate = PullProgress()
        succeeded = False
        try:
            async for line in client.stream("/api/pull", {"model": model, "stream": True}):
                update = aggregate.update(line)
                succeeded = succeeded or update.status == "success"
                outcome = progress(update)
                if outcome is not None:
                    await outcome
        except BackendUnavailable as exc:
            raise InstallFailed(f"Ollama went away during the install: {exc.message}") from exc
        except BackendError as exc:
            raise InstallFailed(exc.message) from exc
        if not succeeded:
            raise InstallFailed("Ollama ended the pull without reporting success")

    async def uninstall(self, model: str) -> None:
        try:
            await self._require().request_json("DELETE", "/api/delete", {"model": model})
        except ModelNotFound as exc:
            raise ModelNotFound(f"model '{model}' is not installed on this Ollama") from exc

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None


async def _empty() -> AsyncIterator[dict[str, Any]]:
    return
    yield  # pragma: no cover

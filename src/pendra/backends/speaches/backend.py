"""SpeachesBackend: the Backend interface over one verified Speaches endpoint.

Transcription goes to ``POST /v1/audio/transcriptions`` as the multipart form OpenAI's API takes
(the audio and the typed fields of protocol/transcription.py's job); installs are
``POST /v1/models/{id}`` and removals ``DELETE /v1/models/{id}`` (the id keeps its ``/``: Speaches
routes ``{model_id:path}``). Speaches' install call blocks until the download is done and streams
nothing, so an install reports honest phases only — "downloading" with no byte figures, then
"success" — never invented bytes. Chat, embeddings and images are not Speaches' (501).

Errors: Speaches answers FastAPI's ``{"detail": ...}``; a 4xx is the request's (its text kept:
415 for audio it cannot decode, 404 for a model it does not have), a 5xx the backend's (502), a
refused connection ``BackendUnavailable`` (the registry re-checks it), and a transcription longer
than ``first_token_timeout`` (nothing streams back meanwhile) ``BackendTimeout``.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

from pendra.backends.base import (BackendStatus, ChatResult, InstallProgress, ModelInfo,
                                  ProgressCallback, Usage)
from pendra.backends.speaches import shapes
from pendra.errors import (BackendError, BackendRejected, BackendTimeout, BackendUnavailable,
                           InstallFailed, ModelNotFound, UnsupportedOperation)
from pendra.protocol.transcription import (JSON_FORMATS, decode_job, json_answer, reported_usage,
                                           text_answer)

PROBE_TIMEOUT = httpx.Timeout(3.0, connect=1.0)
# An install downloads a model of up to a few GB and answers only when it is done: unbounded, as
# an Ollama pull is (a cancel_op stops it; a Speaches that dies closes the connection).
INSTALL_TIMEOUT = httpx.Timeout(connect=3.0, read=None, write=60.0, pool=10.0)
# How old the /v1/models answer verification read may be for list_models to use it.
MODELS_FRESH_S = 1.0
CAPABILITIES = ("transcribe", "install", "uninstall")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail[:500]
    if detail is not None:
        return str(detail)[:500]
    return str(body)[:500]


class SpeachesBackend:
    kind = "speaches"

    def __init__(self, *, transcription_timeout_s: float = 600.0) -> None:
        self.timeout = httpx.Timeout(connect=3.0, read=transcription_timeout_s, write=60.0,
                                     pool=10.0)
        self.client: httpx.AsyncClient | None = None
        self.endpoint = ""
        self.version = ""
        self._models: tuple[float, list[dict[str, Any]]] | None = None

    def _require(self) -> httpx.AsyncClient:
        if self.client is None:
            raise BackendUnavailable("Speaches is not connected on this worker")
        return self.client

    # --- discovery -------------------------------------------------------------------------------

    async def verify(self, endpoint: str) -> BackendStatus:
        """Verify ``endpoint`` (see shapes.py); when it verifies it becomes the one served."""
        endpoint = endpoint.rstrip("/")
        active = self.client is not None and self.endpoint == endpoint
        client = self.client if active and self.client is not None else httpx.AsyncClient(
            base_url=endpoint, timeout=self.timeout)
        try:
            version = await self._identify(client, known=active)
        except (httpx.HTTPError, shapes.NotSpeaches, ValueError) as exc:
            self._models = None
            if not active:
                await client.aclose()
            reason = (str(exc) if isinstance(exc, shapes.NotSpeaches)
                      else f"not reachable ({type(exc).__name__}: {str(exc)[:200] or 'no answer'})")
            return BackendStatus(self.kind, endpoint, False, reason=reason)
        if not active:
            if self.client is not None:
                await self.client.aclose()
            self.client, self.endpoint = client, endpoint
        self.version = version
        return BackendStatus(self.kind, endpoint, True, version, capabilities=CAPABILITIES)

    async def _identify(self, client: httpx.AsyncClient, *, known: bool) -> str:
        health = await client.get("/health", timeout=PROBE_TIMEOUT)
        shapes.check_health(health.status_code, _json(health))
        listed = await client.get("/v1/models", timeout=PROBE_TIMEOUT)
        entries = shapes.check_models(listed.status_code, _json(listed))
        self._models = (time.monotonic(), entries)
        if known:
            return self.version
        document = await client.get("/openapi.json", timeout=PROBE_TIMEOUT)
        return shapes.check_openapi(document.status_code, _json(document))

    async def list_models(self) -> list[ModelInfo]:
        read, self._models = self._models, None
        if read is not None and time.monotonic() - read[0] < MODELS_FRESH_S:
            return shapes.transcription_models(read[1])
        try:
            listed = await self._require().get("/v1/models", timeout=PROBE_TIMEOUT)
            return shapes.transcription_models(shapes.check_models(listed.status_code,
                                                                   _json(listed)))
        except (httpx.HTTPError, shapes.NotSpeaches, ValueError) as exc:
            raise BackendUnavailable(f"Speaches did not list its models: {exc}") from exc

    # --- inference -------------------------------------------------------------------------------

    async def chat(self, model: ModelInfo, body: dict[str, Any]) -> ChatResult:
        raise UnsupportedOperation("Speaches serves transcription only, not chat")

    async def embed(self, model: ModelInfo, body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        raise UnsupportedOperation("Speaches serves transcription only, not embeddings")

    async def generate_image(self, model: ModelInfo,
                             body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        raise UnsupportedOperation("Speaches serves transcription only, not images")

    async def transcribe(self, model: ModelInfo, body: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
        try:
            job = decode_job(body)
        except ValueError as exc:
            raise BackendRejected(str(exc), status=400) from exc
        client = self._require()
        try:
            response = await client.post(
                "/v1/audio/transcriptions", data=job.form_fields(model.id),  # type: ignore[arg-type]
                files={"file": (job.filename, job.audio, job.content_type)})
        except httpx.TimeoutException as exc:
            raise BackendTimeout(f"Speaches did not finish the transcription within "
                                 f"{self.timeout.read:g}s") from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"Speaches at {self.endpoint} is not reachable: "
                                     f"{type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise BackendRejected(f"Speaches: {_detail(response)}",
                                  status=response.status_code if response.status_code < 500
                                  else 502)
        if job.response_format in JSON_FORMATS:
            answer = _json(response)
            if not isinstance(answer, dict):
                raise BackendRejected("Speaches answered a JSON transcription without a JSON "
                                      "object", status=502)
            counts = reported_usage(answer)
            return json_answer(answer), Usage(counts.get("prompt_tokens", 0),
                                              counts.get("completion_tokens", 0))
        return text_answer(response.text), Usage()

    # --- model lifecycle -------------------------------------------------------------------------

    async def install(self, model: str, progress: ProgressCallback) -> None:
        client = self._require()
        self._models = None  # what verification read is stale from here
        await _report(progress, InstallProgress("downloading (Speaches reports no progress "
                                                "until the download is done)"))
        try:
            response = await client.post(f"/v1/models/{quote(model, safe='/')}",
                                         timeout=INSTALL_TIMEOUT)
        except httpx.HTTPError as exc:
            raise InstallFailed(f"Speaches stopped answering during the install of '{model}': "
                                f"{type(exc).__name__}") from exc
        if response.status_code not in (200, 201):  # 201: it was already there
            raise InstallFailed(f"Speaches could not install '{model}': {_detail(response)}",
                                status=response.status_code if response.status_code < 500
                                else 502)
        await _report(progress, InstallProgress("success"))

    async def uninstall(self, model: str) -> None:
        client = self._require()
        self._models = None
        try:
            response = await client.delete(f"/v1/models/{quote(model, safe='/')}",
                                           timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"Speaches is not reachable: {type(exc).__name__}") from exc
        if response.status_code == 404:
            raise ModelNotFound(f"model '{model}' is not installed in Speaches")
        if response.status_code >= 400:
            raise BackendError(f"Speaches could not remove '{model}': {_detail(response)}")

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def _report(progress: ProgressCallback, update: InstallProgress) -> None:
    result = progress(update)
    if result is not None:
        await result

"""A thin async client for Ollama's native API; the only place that sees httpx errors.

Rules: transport failures become ``BackendUnavailable``; an error status becomes ``ModelNotFound``
(404) or ``BackendRejected`` carrying Ollama's own status and message; an ``{"error": …}`` line in an
NDJSON stream is raised as ``BackendRejected`` — a stream never ends silently on an error.

A stream given ``StreamLimits`` is bounded twice, and each bound raises ``BackendTimeout``: the
first line (Ollama sends its headers with it) may take up to ``first_line_s`` — the model may be
loading, and Ollama's stream gives no progress while it does — and after that no gap between two
lines may exceed ``stall_s``. Whether a silent Ollama is still alive is verification's question
(``/api/version``), answered by the registry, not here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from pendra.errors import BackendRejected, BackendTimeout, BackendUnavailable, ModelNotFound

# Discovery must not hang a refresh tick on a dead or black-holed host.
PROBE_TIMEOUT = httpx.Timeout(3.0, connect=1.0)
# Inference may think for a long time before its first token; reads are unbounded per chunk gap
# of this many seconds.
INFERENCE_TIMEOUT = httpx.Timeout(connect=3.0, read=600.0, write=60.0, pool=10.0)
# A stream with StreamLimits: those limits bound the reads, so httpx does not.
LIMITED_STREAM_TIMEOUT = httpx.Timeout(connect=3.0, read=None, write=60.0, pool=10.0)


@dataclass(frozen=True)
class StreamLimits:
    """How long a stream may wait for its first line, and then between two lines (seconds)."""

    first_line_s: float
    stall_s: float


def _message(response_text: str, status: int) -> str:
    try:
        data = json.loads(response_text)
    except json.JSONDecodeError:
        return response_text.strip() or f"HTTP {status}"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return response_text.strip() or f"HTTP {status}"


def raise_for(status: int, text: str) -> None:
    if status < 400:
        return
    message = _message(text, status)
    if status == 404 and "not found" in message:
        raise ModelNotFound(message)
    raise BackendRejected(message, status=status)


# Connections to one Ollama: a worker runs at most 64 requests (MAX_CONCURRENT) plus discovery's 5
# /api/show calls and an install or two. All of them are kept alive between requests (httpx keeps
# only 20 by default, so at 64 concurrent requests most would reconnect for every request).
POOL_CONNECTIONS = 128


class OllamaClient:
    def __init__(self, base_url: str, *, timeout: httpx.Timeout = INFERENCE_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout,
            limits=httpx.Limits(max_connections=POOL_CONNECTIONS,
                                max_keepalive_connections=POOL_CONNECTIONS))

    async def aclose(self) -> None:
        await self._http.aclose()

    def _unavailable(self, exc: httpx.HTTPError) -> BackendUnavailable:
        reason = type(exc).__name__
        detail = str(exc)
        return BackendUnavailable(f"Ollama at {self.base_url} is not answering ({reason}"
                                  + (f": {detail}" if detail else "") + ")")

    async def get_json(self, path: str, *, timeout: httpx.Timeout | None = None) -> Any:
        try:
            response = await self._http.get(path, timeout=timeout or PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        raise_for(response.status_code, response.text)
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise BackendRejected(f"{path} did not answer JSON", status=502) from exc

    async def request_json(self, method: str, path: str, body: dict[str, Any], *,
                           timeout: httpx.Timeout | None = None) -> Any:
        try:
            response = await self._http.request(method, path, json=body,
                                                timeout=timeout or INFERENCE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        raise_for(response.status_code, response.text)
        if not response.content:
            return None
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise BackendRejected(f"{path} did not answer JSON", status=502) from exc

    async def post_form(self, path: str, fields: dict[str, str],
                        files: dict[str, tuple[str, bytes, str]]) -> httpx.Response:
        """A multipart POST (Ollama's /v1/audio/transcriptions); an error status raises as
        ``raise_for`` says, with the message of OpenAI's envelope that Ollama's /v1 layer sends."""
        try:
            response = await self._http.post(path, data=fields, files=files,  # type: ignore[arg-type]
                                             timeout=INFERENCE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        if response.status_code >= 400:
            try:
                error = response.json().get("error")
            except (ValueError, AttributeError):
                error = None
            message = error.get("message") if isinstance(error, dict) else None
            raise_for(response.status_code, json.dumps({"error": message})
                      if isinstance(message, str) else response.text)
        return response

    async def stream(self, path: str, body: dict[str, Any], *,
                     limits: StreamLimits | None = None) -> AsyncIterator[dict[str, Any]]:
        """Each NDJSON line of a streamed answer; closing the iterator aborts the request."""
        loop = asyncio.get_running_loop()
        deadline = None if limits is None else loop.time() + limits.first_line_s
        started = False
        request = self._http.build_request(
            "POST", path, json=body,
            timeout=INFERENCE_TIMEOUT if limits is None else LIMITED_STREAM_TIMEOUT)
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self._http.send(request, stream=True)
            except TimeoutError as exc:
                raise self._silent(path, limits, started=False) from exc
            lines = response.aiter_lines()
            try:
                if response.status_code >= 400:
                    raise_for(response.status_code,
                              (await response.aread()).decode(errors="replace"))
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            line = await anext(lines)
                    except StopAsyncIteration:
                        return
                    except TimeoutError as exc:
                        raise self._silent(path, limits, started=started) from exc
                    if limits is not None:
                        started = True
                        deadline = loop.time() + limits.stall_s
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise BackendRejected(f"{path} sent a line that is not JSON",
                                              status=502) from exc
                    if isinstance(data, dict) and "error" in data:
                        raise BackendRejected(str(data["error"]), status=500)
                    yield data
            finally:
                await lines.aclose()
                await response.aclose()
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc

    def _silent(self, path: str, limits: StreamLimits | None, *, started: bool) -> BackendTimeout:
        assert limits is not None  # only a limited stream has deadlines
        if started:
            return BackendTimeout(f"Ollama at {self.base_url} stalled: {path} sent nothing for "
                                  f"{limits.stall_s:g}s after the stream had started "
                                  "(STREAM_STALL_TIMEOUT)")
        return BackendTimeout(f"Ollama at {self.base_url} sent no first token on {path} within "
                              f"{limits.first_line_s:g}s (FIRST_TOKEN_TIMEOUT)")

"""A thin async client for Ollama's native API; the only place that sees httpx errors.

Rules: transport failures become ``BackendUnavailable``; an error status becomes ``ModelNotFound``
(404) or ``BackendRejected`` carrying Ollama's own status and message; an ``{"error": …}`` line in an
NDJSON stream is raised as ``BackendRejected`` — a stream never ends silently on an error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from pendra.errors import BackendRejected, BackendUnavailable, ModelNotFound

# Discovery must not hang a refresh tick on a dead or black-holed host.
PROBE_TIMEOUT = httpx.Timeout(3.0, connect=1.0)
# Inference may think for a long time before its first token; reads are unbounded per chunk gap
# of this many seconds.
INFERENCE_TIMEOUT = httpx.Timeout(connect=3.0, read=600.0, write=60.0, pool=10.0)


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


class OllamaClient:
    def __init__(self, base_url: str, *, timeout: httpx.Timeout = INFERENCE_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       limits=httpx.Limits(max_connections=128))

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

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Each NDJSON line of a streamed answer; closing the iterator aborts the request."""
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    raise_for(response.status_code, (await response.aread()).decode(errors="replace"))
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise BackendRejected(f"{path} sent a line that is not JSON", status=502) from exc
                    if isinstance(data, dict) and "error" in data:
                        raise BackendRejected(str(data["error"]), status=500)
                    yield data
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc

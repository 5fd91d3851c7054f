"""A thin async client for an OpenAI-compatible server; the only place that sees httpx errors here.

Rules (as for Ollama's client, so a request fails the same way whichever backend served it):
- Transport failures become ``BackendUnavailable``. An error status becomes ``ModelNotFound`` (404),
  ``BackendRejected`` 502 for 401/403 (the worker's key for the backend is wrong: not the client's
  fault), or ``BackendRejected`` with the server's own status and the message it gave, read from any of the
  error bodies these servers send: OpenAI's ``{"error": {"message": …}}``, vLLM's older
  ``{"object": "error", "message": …}``, FastAPI's ``{"detail": …}`` and ``{"error": "…"}``.
- ``stream`` yields each Server-Sent Event's JSON ``data`` until ``data: [DONE]``; an event whose data
  is an error object is raised as ``BackendRejected`` — a stream never ends silently on an error. A
  line that is not JSON fails the stream (502).
- A stream given ``StreamLimits`` is bounded twice (``BackendTimeout``): the first event may take up
  to ``first_line_s`` (the model may be loading or the request queued), then no gap between two
  events may exceed ``stall_s``.
- ``api_key`` (when set) is sent as ``Authorization: Bearer`` on every call (vLLM ``--api-key``,
  llama-server ``--api-key``, LM Studio's API token).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from pendra.backends.ollama.client import POOL_CONNECTIONS, StreamLimits
from pendra.errors import BackendRejected, BackendTimeout, BackendUnavailable, ModelNotFound

__all__ = ["OpenAICompatClient", "StreamLimits", "error_message", "raise_for"]

# The same bounds as the Ollama client's: discovery must not hang a refresh tick; inference may
# think for a long time between chunks; a stream with StreamLimits is bounded by those instead.
PROBE_TIMEOUT = httpx.Timeout(3.0, connect=1.0)
INFERENCE_TIMEOUT = httpx.Timeout(connect=3.0, read=600.0, write=60.0, pool=10.0)
LIMITED_STREAM_TIMEOUT = httpx.Timeout(connect=3.0, read=None, write=60.0, pool=10.0)
# An error message relayed from a backend is clipped to this many characters.
MAX_MESSAGE = 2000


def error_message(data: Any) -> str | None:
    """The human message inside any of the error bodies OpenAI-compatible servers send."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    if data.get("object") == "error" and isinstance(data.get("message"), str):
        return data["message"]
    detail = data.get("detail")
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and detail:
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return None


def raise_for(status: int, text: str, *, name: str) -> None:
    if status < 400:
        return
    try:
        message = error_message(json.loads(text))
    except json.JSONDecodeError:
        message = None
    message = (message or text.strip() or f"HTTP {status}")[:MAX_MESSAGE]
    if status == 404:
        raise ModelNotFound(f"{name}: {message}")
    if status in (401, 403):  # the worker's key for the backend, not the client's: a 502
        raise BackendRejected(f"{name} refused the worker's credentials (HTTP {status}; check "
                              f"its API key setting): {message}", status=502)
    raise BackendRejected(f"{name}: {message}", status=status)


class OpenAICompatClient:
    def __init__(self, base_url: str, *, name: str, api_key: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name  # "vLLM", "LM Studio", … for messages
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=INFERENCE_TIMEOUT, headers=headers,
            limits=httpx.Limits(max_connections=POOL_CONNECTIONS,
                                max_keepalive_connections=POOL_CONNECTIONS))

    async def aclose(self) -> None:
        await self._http.aclose()

    def _unavailable(self, exc: httpx.HTTPError) -> BackendUnavailable:
        detail = str(exc)
        return BackendUnavailable(f"{self.name} at {self.base_url} is not answering "
                                  f"({type(exc).__name__}" + (f": {detail}" if detail else "") + ")")

    def _json(self, response: httpx.Response, path: str) -> Any:
        raise_for(response.status_code, response.text, name=self.name)
        if not response.content:
            return None
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BackendRejected(f"{self.name}: {path} did not answer JSON", status=502) from exc

    async def get_json(self, path: str, *, timeout: httpx.Timeout | None = None) -> Any:
        try:
            response = await self._http.get(path, timeout=timeout or PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        return self._json(response, path)

    async def request_json(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                           timeout: httpx.Timeout | None = None) -> Any:
        try:
            response = await self._http.request(method, path, json=body,
                                                timeout=timeout or INFERENCE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        return self._json(response, path)

    async def stream(self, path: str, body: dict[str, Any], *,
                     limits: StreamLimits | None = None) -> AsyncIterator[dict[str, Any]]:
        """Each SSE event's JSON data; closing the iterator aborts the request."""
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
                              (await response.aread()).decode(errors="replace"), name=self.name)
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
                    if not line.startswith("data:"):
                        continue  # blank separators, comments (": ping"), event:/id: fields
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        data = json.loads(payload)
                    except json.JSONDecodeError as exc:
                        raise BackendRejected(f"{self.name}: {path} sent an event that is not "
                                              "JSON", status=502) from exc
                    if not isinstance(data, dict):
                        raise BackendRejected(f"{self.name}: {path} sent an event that is not "
                                              "a JSON object", status=502)
                    message = error_message(data) if ("error" in data or
                                                      data.get("object") == "error") else None
                    if message is not None:
                        raise BackendRejected(f"{self.name}: {message}"[:MAX_MESSAGE], status=502)
                    yield data
            finally:
                await lines.aclose()
                await response.aclose()
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc

    def _silent(self, path: str, limits: StreamLimits | None, *, started: bool) -> BackendTimeout:
        assert limits is not None  # only a limited stream has deadlines
        return limits.exceeded(f"{self.name} at {self.base_url}", path, started=started)

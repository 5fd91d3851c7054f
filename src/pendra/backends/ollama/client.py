"""A thin async client for Ollama's native API; the only place that sees the HTTP client's errors
(``pendra.backends.http``: a keep-alive pool of ``POOL_CONNECTIONS``, ``TCP_NODELAY``).

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

import orjson

from pendra.backends.http import HttpClient, HttpError, Timeouts, multipart_form
from pendra.errors import BackendRejected, BackendTimeout, BackendUnavailable, ModelNotFound

# Discovery must not hang a refresh tick on a dead or black-holed host.
PROBE_TIMEOUT = Timeouts(connect=1.0, read=3.0, write=3.0, pool=3.0)
# Inference may think for a long time before its first token; reads are unbounded per chunk gap
# of this many seconds.
INFERENCE_TIMEOUT = Timeouts(connect=3.0, read=600.0, write=60.0, pool=10.0)
# A stream with StreamLimits: those limits bound the reads, so the HTTP client does not.
LIMITED_STREAM_TIMEOUT = Timeouts(connect=3.0, read=None, write=60.0, pool=10.0)


@dataclass(frozen=True)
class StreamLimits:
    """How long a stream may wait for its first line, and then between two lines (seconds)."""

    first_line_s: float
    stall_s: float

    def exceeded(self, backend: str, path: str, *, started: bool) -> BackendTimeout:
        """The timeout of a stream from ``backend`` ("Ollama at …") that went silent on ``path``
        before its first line or, once ``started``, between two lines."""
        if started:
            return BackendTimeout(f"{backend} stalled: {path} sent nothing for {self.stall_s:g}s "
                                  "after the stream had started (STREAM_STALL_TIMEOUT)")
        return BackendTimeout(f"{backend} sent no first token on {path} within "
                              f"{self.first_line_s:g}s (FIRST_TOKEN_TIMEOUT)")


def _loads(data: bytes) -> Any:
    """JSON from Ollama: orjson, or the standard parser for what orjson refuses (NaN, integers
    past 64 bits); ``json.JSONDecodeError`` when neither takes it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _encode(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # what orjson refuses (an integer past 64 bits): the standard encoder
        return json.dumps(body, separators=(",", ":")).encode()


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
# /api/show calls and an install or two. All of them are kept alive between requests (so at 64
# concurrent requests none reconnects for every request).
POOL_CONNECTIONS = 128


class OllamaClient:
    def __init__(self, base_url: str, *, timeout: Timeouts = INFERENCE_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = HttpClient(self.base_url, max_connections=POOL_CONNECTIONS, timeouts=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _unavailable(self, exc: HttpError) -> BackendUnavailable:
        reason = type(exc).__name__
        detail = str(exc)
        return BackendUnavailable(f"Ollama at {self.base_url} is not answering ({reason}"
                                  + (f": {detail}" if detail else "") + ")")

    async def _call(self, method: str, path: str, body: dict[str, Any] | None,
                    timeout: Timeouts) -> tuple[int, bytes]:
        try:
            response = await self._http.send(method, path, None if body is None else _encode(body),
                                             timeouts=timeout)
            async with response:
                return response.status_code, await response.read()
        except HttpError as exc:
            raise self._unavailable(exc) from exc

    def _json(self, path: str, status: int, content: bytes) -> Any:
        if status >= 400:
            raise_for(status, content.decode(errors="replace"))
        if not content:
            return None
        try:
            return _loads(content)
        except json.JSONDecodeError as exc:
            raise BackendRejected(f"{path} did not answer JSON", status=502) from exc

    async def get_json(self, path: str, *, timeout: Timeouts | None = None) -> Any:
        status, content = await self._call("GET", path, None, timeout or PROBE_TIMEOUT)
        if status < 400 and not content:
            raise BackendRejected(f"{path} did not answer JSON", status=502)
        return self._json(path, status, content)

    async def request_json(self, method: str, path: str, body: dict[str, Any], *,
                           timeout: Timeouts | None = None) -> Any:
        status, content = await self._call(method, path, body, timeout or INFERENCE_TIMEOUT)
        return self._json(path, status, content)

    async def post_form(self, path: str, fields: dict[str, str],
                        files: dict[str, tuple[str, bytes, str]]) -> bytes:
        """A multipart POST (Ollama's /v1/audio/transcriptions) and the body of its answer; an
        error status raises as ``raise_for`` says, with the message of OpenAI's envelope that
        Ollama's /v1 layer sends."""
        body, content_type = multipart_form(fields, files)
        try:
            response = await self._http.send("POST", path, body, timeouts=INFERENCE_TIMEOUT,
                                             content_type=content_type)
            async with response:
                status, content = response.status_code, await response.read()
        except HttpError as exc:
            raise self._unavailable(exc) from exc
        if status >= 400:
            try:
                error = _loads(content).get("error")
            except (ValueError, AttributeError):
                error = None
            message = error.get("message") if isinstance(error, dict) else None
            raise_for(status, json.dumps({"error": message}) if isinstance(message, str)
                      else content.decode(errors="replace"))
        return content

    async def stream(self, path: str, body: dict[str, Any], *,
                     limits: StreamLimits | None = None) -> AsyncIterator[dict[str, Any]]:
        """Each NDJSON line of a streamed answer; closing the iterator aborts the request."""
        loop = asyncio.get_running_loop()
        deadline = None if limits is None else loop.time() + limits.first_line_s
        started = False
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self._http.send(
                        "POST", path, _encode(body),
                        timeouts=INFERENCE_TIMEOUT if limits is None else LIMITED_STREAM_TIMEOUT)
            except TimeoutError as exc:
                raise self._silent(path, limits, started=False) from exc
            async with response:
                if response.status_code >= 400:
                    raise_for(response.status_code, (await response.read()).decode(errors="replace"))
                pending: list[bytes] = []  # the start of a line whose end has not arrived
                done = False
                while not done:
                    try:
                        async with asyncio.timeout_at(deadline):
                            piece = await response.next_piece()
                    except TimeoutError as exc:
                        raise self._silent(path, limits, started=started) from exc
                    if not piece:
                        done, piece = True, b"\n"  # a last line without its newline still counts
                    if b"\n" not in piece:
                        pending.append(piece)
                        continue  # no whole line yet: the deadline for this one still runs
                    if pending:
                        pending.append(piece)
                        piece = b"".join(pending)
                    *lines, rest = piece.split(b"\n")
                    pending = [rest] if rest else []
                    if limits is not None:
                        started = True
                        deadline = loop.time() + limits.stall_s
                    for line in lines:
                        if not line.strip():
                            continue
                        try:
                            data = _loads(line)
                        except json.JSONDecodeError as exc:
                            raise BackendRejected(f"{path} sent a line that is not JSON",
                                                  status=502) from exc
                        if isinstance(data, dict) and "error" in data:
                            raise BackendRejected(str(data["error"]), status=500)
                        yield data
        except HttpError as exc:
            raise self._unavailable(exc) from exc

    def _silent(self, path: str, limits: StreamLimits | None, *, started: bool) -> BackendTimeout:
        assert limits is not None  # only a limited stream has deadlines
        return limits.exceeded(f"Ollama at {self.base_url}", path, started=started)

"""A minimal keep-alive HTTP/1.1 client for load generation: one connection, one request at a time.

Why not httpx: on a 2-core machine the load generator shares the CPU with what it measures, and
httpx spends several times more CPU per request than this. Both the baseline (the emulator) and
Pendra are driven by the same client, so its own cost weighs on both sides alike.

Rules: ``Content-Length`` and ``chunked`` bodies only (what uvicorn sends); the connection is
reused until the server says ``Connection: close``; ``stream`` hands back the body as it arrives
with the arrival time of each piece, so callers can time the first token and count events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


class Connection:
    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        self._reader = self._writer = None

    async def _send(self, method: str, path: str, body: bytes) -> tuple[asyncio.StreamReader, int, dict[str, str]]:
        reader, writer = await self._open()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body)
        status_line = await reader.readline()
        if not status_line:
            raise HttpError("connection closed before the response")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return reader, status, headers

    async def _pieces(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()  # the empty trailer
                    break
                data = await reader.readexactly(size + 2)
                yield data[:-2]
        else:
            length = int(headers.get("content-length", "0"))
            if length:
                yield await reader.readexactly(length)
        if headers.get("connection", "").lower() == "close":
            await self.close()

    async def request(self, method: str, path: str, payload: Any = None) -> tuple[int, bytes]:
        body = b"" if payload is None else json.dumps(payload).encode()
        try:
            reader, status, headers = await self._send(method, path, body)
            data = b"".join([piece async for piece in self._pieces(reader, headers)])
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise HttpError(f"{method} {path}: {exc!r}") from exc
        return status, data

    async def stream(self, path: str, payload: Any) -> AsyncIterator[tuple[float, bytes]]:
        """POST and yield (arrival time, piece) for every body piece; status >= 400 raises."""
        try:
            reader, status, headers = await self._send("POST", path, json.dumps(payload).encode())
            if status >= 400:
                body = b"".join([p async for p in self._pieces(reader, headers)])
                raise HttpError(f"POST {path}: {status} {body[:200]!r}")
            async for piece in self._pieces(reader, headers):
                yield time.perf_counter(), piece
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise HttpError(f"POST {path}: {exc!r}") from exc


class EventCounter:
    """Counts delimited events (NDJSON lines, SSE events) across arbitrary piece boundaries."""

    def __init__(self, delimiter: bytes) -> None:
        self.delimiter = delimiter
        self.count = 0
        self._tail = b""

    def feed(self, piece: bytes) -> int:
        data = self._tail + piece
        found = data.count(self.delimiter)
        self.count += found
        keep = len(self.delimiter) - 1
        self._tail = data[-keep:] if keep and not data.endswith(self.delimiter) else b""
        return found

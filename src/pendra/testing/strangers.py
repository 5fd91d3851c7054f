"""A stranger on ``/ws/gpu``, as cheap for the tests and benchmarks as for a real attacker.

``oversized_frame`` opens a raw TCP connection, completes the WebSocket upgrade and announces one
frame far larger than any hello, then streams its payload (a given body, or random bytes) in 64 KiB
pieces until the server stops it. It never holds more than one piece in memory, so 20 of them
announcing 60 MB each cost the attacking side nothing, and any memory growth is the server's.
"""

from __future__ import annotations

import asyncio
import base64
import os
from urllib.parse import urlsplit

PIECE = os.urandom(64 * 1024)
# How long the attacker waits for the server's close once it has stopped reading.
CLOSE_WAIT_S = 10.0


def frame_header(length: int) -> bytes:
    """A masked text frame announcing ``length`` bytes (the 64-bit length form)."""
    return bytes([0x81, 0x80 | 127]) + length.to_bytes(8, "big") + os.urandom(4)


async def oversized_frame(base_url: str, announced: int, body: bytes | None = None,
                          path: str = "/ws/gpu") -> str:
    """Upgrade, announce a frame of ``announced`` bytes and keep sending until the server stops
    us. Returns how it ended: "denied" (an HTTP answer instead of the upgrade) or "closed"."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            return "denied"
        writer.write(frame_header(announced))
        sent = 0
        while sent < announced and not reader.at_eof():
            piece = body[sent:sent + len(PIECE)] if body is not None else PIECE
            writer.write(piece[:announced - sent])
            sent += len(piece)
            await writer.drain()
        await asyncio.wait_for(reader.read(), CLOSE_WAIT_S)  # the server's close, then EOF
        return "closed"
    except (ConnectionError, asyncio.IncompleteReadError):
        return "closed"
    finally:
        writer.close()


def huge_hello(size: int) -> bytes:
    """A hello whose ``worker_id`` alone is about ``size`` bytes."""
    return (b'{"type": "hello", "protocol_version": 2, "worker_id": "' + b"w" * max(size - 100, 0)
            + b'"}')


async def flood(base_url: str, *, hellos: int, hello_bytes: int, frames: int,
                frame_bytes: int) -> list[str]:
    """``hellos`` huge hellos and ``frames`` oversized frames at once; how each one ended."""
    hello = huge_hello(hello_bytes)
    return list(await asyncio.gather(
        *(oversized_frame(base_url, len(hello), hello) for _ in range(hellos)),
        *(oversized_frame(base_url, frame_bytes) for _ in range(frames))))


def main(argv: list[str] | None = None) -> None:
    """``python -m pendra.testing.strangers URL [--rounds N] ...``: run the flood from its own
    process (so a benchmark measures the server, not its own event loop) and print the endings."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("url")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between rounds")
    parser.add_argument("--hellos", type=int, default=20)
    parser.add_argument("--hello-bytes", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--frame-bytes", type=int, default=60 * 1024 * 1024)
    args = parser.parse_args(argv)

    async def rounds() -> list[str]:
        endings: list[str] = []
        for round_ in range(args.rounds):
            if round_:
                await asyncio.sleep(args.pause)
            endings += await flood(args.url, hellos=args.hellos, hello_bytes=args.hello_bytes,
                                   frames=args.frames, frame_bytes=args.frame_bytes)
        return endings

    endings = asyncio.run(rounds())
    print(json.dumps({"closed": endings.count("closed"), "denied": endings.count("denied")}))


if __name__ == "__main__":
    main()

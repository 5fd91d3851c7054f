"""A WebSocket's frame budget, per connection: small until the peer has proved who it is.

uvicorn applies one ``ws_max_size`` to every WebSocket for its whole life, and a frame up to that
size is read whole into memory before the app sees a byte of it, so a stranger could make the
control plane buffer ``ws_max_size`` per connection before authenticating. This module owns the
one exception to that: ``LimitedWebSocketProtocol`` (passed to uvicorn as its ``ws`` protocol)
starts every connection at ``HANDSHAKE_FRAME_BYTES`` and puts a setter into the ASGI scope's
``extensions`` under ``FRAME_LIMIT_EXTENSION``; the /ws/gpu endpoint raises the limit to
``MAX_FRAME_BYTES`` once the worker's signature has verified (``raise_frame_limit``).

The websockets library checks a frame's announced length against the limit before reading its
payload, so an oversized frame costs its header and a close (1009), not its size in memory.

It relies on uvicorn's ``websockets-sansio`` implementation (``WebSocketsSansIOProtocol``, the
one ``ws="auto"`` picks: its ``conn`` is the websockets library's sans-I/O ``ServerProtocol``, whose
``max_message_size`` is read for every frame) and on ``run_asgi`` being where the scope is handed
to the app. That implementation also stops reading the socket while a message waits for the app,
so an authenticated worker cannot queue more than one frame ahead either. It also mends one thing
there: a denial response (an HTTP answer instead of the upgrade, how /ws/gpu turns strangers away)
is a complete answer to the handshake, not an app that "returned without completing" it — which
uvicorn would log as an error for every stranger denied.
"""

from __future__ import annotations

from typing import Any

from uvicorn._types import ASGISendEvent

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from pendra.protocol.frames import HANDSHAKE_FRAME_BYTES

FRAME_LIMIT_EXTENSION = "pendra.ws.frame_limit"


class LimitedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol whose frame limit starts small and the app may raise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_frame_limit(HANDSHAKE_FRAME_BYTES)

    def _set_frame_limit(self, max_bytes: int) -> None:
        # Never past what the server was configured with.
        self.conn.max_message_size = min(max_bytes, self.config.ws_max_size)

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True  # answered (denied): nothing left to complete

    async def run_asgi(self) -> None:
        self.scope["extensions"][FRAME_LIMIT_EXTENSION] = {"set": self._set_frame_limit}
        await super().run_asgi()


def raise_frame_limit(websocket: WebSocket, max_bytes: int) -> bool:
    """Let ``websocket`` receive frames of up to ``max_bytes``; False when the server running the
    app has no per-connection limit (then its own ``ws_max_size`` applies throughout)."""
    extension = (websocket.scope.get("extensions") or {}).get(FRAME_LIMIT_EXTENSION)
    if not extension:
        return False
    extension["set"](max_bytes)
    return True

"""Text that came from a peer, made safe to log or to put into an error message.

Rules: whatever a peer sends (a worker id, a frame ``type``, an error message) is cut to a bound
*before* it is formatted, so the cost of logging it never grows with what the peer sent, and it is
quoted with control characters escaped, so it cannot forge log lines. Fields whose text is only
informational (a backend's version string, an error message) are clipped where they are parsed
rather than refused: a long message is not a reason to drop a worker.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

# Characters of a peer's string that reach a log line or an error message.
PEER_TEXT_CHARS = 200


def peer_text(value: str, limit: int = PEER_TEXT_CHARS) -> str:
    """``value`` cut to ``limit`` characters, quoted and escaped; says how long it really was."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


def _clipper(limit: int):  # type: ignore[no-untyped-def]
    def clip(value: str) -> str:
        return value if len(value) <= limit else value[:limit]
    return clip


def clipped(limit: int) -> object:
    """An ``Annotated`` marker: a ``str`` field longer than ``limit`` is cut, not refused."""
    return AfterValidator(_clipper(limit))


# Free text a peer may send at length (error messages, reasons): kept to this many characters.
ClippedText = Annotated[str, clipped(4096)]
# Short informational strings (versions, quantisation names, timestamps).
ClippedShort = Annotated[str, clipped(128)]

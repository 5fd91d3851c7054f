"""Logging what a flood repeats: the first occurrence at once, then one summary line a period.

A stranger can make the same event happen hundreds of times a second (a refused connection, a
timed-out header, a refused handshake); a log line each would let it fill the disk and would cost
the control plane more than the refusal itself. A ``FloodLog`` per kind of event writes its first
occurrence with the peer and the detail, then at most one line per ``LOG_EVERY_S`` saying how many
more there were, with the latest peer and detail. Peer text in ``detail`` must already be cut
(protocol/peer_text.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

# At most one line per kind of event in this long.
LOG_EVERY_S = 60.0


@dataclass
class FloodLog:
    """Counts one kind of event and logs it at most every ``every_s`` (the first one at once)."""

    what: str
    logger: logging.Logger
    every_s: float = LOG_EVERY_S
    count: int = 0
    logged_at: float = field(default=-float("inf"))

    def add(self, peer: str, detail: str = "") -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at < self.every_s:
            return
        self.logger.warning("%s: %d since the last report (latest from %s%s)", self.what,
                            self.count, peer, f": {detail}" if detail else "")
        self.count, self.logged_at = 0, now

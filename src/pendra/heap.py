"""The garbage collector in a daemon (``pendra up``, ``pendra server``, ``pendra worker``).

Rules:
- What a daemon holds once it has started (imported modules, the app and its routes, schemas,
  the store's metadata, the worker's inventory) lives as long as the process. ``settle()``, called
  by each daemon once it is serving, collects once and then freezes what is left
  (``gc.freeze``): later full collections walk only what was made after it. Measured on
  ``pendra up`` under load (docs/performance.md, issue 11): ~150,000 objects alive after start-up,
  and each full collection walking them stalled the event loop for ~200 ms.
- Frozen objects are still freed by reference counting when they go; only a reference cycle among
  them would never be collected, which start-up state does not form in a way that matters.
- Only a process started by the command line settles (``daemon_process()``, called by the CLI's
  daemon commands): code run inside a test process leaves that process's collector alone.
"""

from __future__ import annotations

import gc

_daemon = False


def daemon_process() -> None:
    """This process is a daemon started from the command line: ``settle`` will freeze."""
    global _daemon
    _daemon = True


def settle() -> None:
    """Start-up is over: collect once, then freeze what is alive (in a daemon process only)."""
    if not _daemon:
        return
    gc.collect()
    gc.freeze()

"""Which store failures pass, and how long to wait before trying a write again.

Rules:
- ``transient(exc)`` is the one place that decides whether a failed write is worth retrying: a
  locked SQLite database, a lost or invalidated connection, an exhausted pool, a PostgreSQL
  serialization failure, deadlock, lock or statement timeout. Anything else (a value the column
  cannot hold, a broken constraint, a bug) fails the same way every time and is not retried.
- ``brief(exc)`` is how a store failure is logged: its first line, clipped (never a whole statement
  with its parameters).
- ``Backoff`` yields capped, jittered, doubling delays; callers that retry "until stored" loop
  around it and are bounded from outside (a shutdown deadline, a bounded queue in front).
"""

from __future__ import annotations

import random

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLSTATE classes and codes PostgreSQL uses for failures that pass: connection exceptions (08),
# transaction rollbacks (40: serialization failure, deadlock), operator intervention (57: query
# cancelled by statement_timeout, server shutting down), lock not available (55P03).
_PG_TRANSIENT_CLASSES = ("08", "40", "57")
_PG_TRANSIENT_CODES = frozenset({"55P03", "53300"})  # 53300: too many connections


def transient(exc: BaseException) -> bool:
    """Whether a store operation that raised ``exc`` may succeed if simply tried again."""
    if isinstance(exc, (OperationalError, DisconnectionError, PoolTimeout, OSError,
                        TimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        code = getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)
        if isinstance(code, str):
            return code in _PG_TRANSIENT_CODES or code[:2] in _PG_TRANSIENT_CLASSES
    return False


class Backoff:
    """Delays of ``first_s`` doubling up to ``max_s``, each with up to 25% jitter; ``reset`` after a
    success."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self._first_s, self._max_s = first_s, max_s
        self._next_s = first_s

    def next_delay(self) -> float:
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self._max_s)
        return delay * random.uniform(0.75, 1.0)

    def reset(self) -> None:
        self._next_s = self._first_s


# A failure's text in the log: enough to recognise it, never a whole statement with its parameters.
ERROR_LOG_CHARS = 200


def brief(exc: BaseException) -> str:
    """The first line of an error, clipped for the log."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= ERROR_LOG_CHARS else text[: ERROR_LOG_CHARS - 1] + "…"

"""Waiting for a condition the suite cannot be told about: the one polling loop of the tests.

Rules:
- ``eventually(check)`` calls ``check`` (a plain or an async callable) until it returns something
  true, and returns that value; a check may also raise to end the wait (e.g. a process exited).
- Every wait has a ceiling, ``timeout_s`` scaled by ``WAIT`` (suite_env.py), covering the checks
  themselves too; past it the wait fails with ``TimeoutError`` saying what was awaited. No test
  asserts how fast a condition comes true, only that it does within the ceiling.
- The interval between checks is short and unscaled: it only trades CPU for latency.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from suite_env import WAIT

T = TypeVar("T")

# Seconds between two checks: short enough that waiting adds nothing noticeable to a test.
INTERVAL_S = 0.01
# Default ceiling (before WAIT scaling): generous, so only a broken build reaches it.
TIMEOUT_S = 10.0


async def eventually(check: Callable[[], T | Awaitable[T]], *, timeout_s: float = TIMEOUT_S,
                     interval_s: float = INTERVAL_S, what: str = "") -> T:
    """``check()``'s first true value, polled every ``interval_s`` for at most ``timeout_s * WAIT``."""
    ceiling_s = timeout_s * WAIT
    try:
        async with asyncio.timeout(ceiling_s):
            while True:
                value = check()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value  # type: ignore[return-value]
                await asyncio.sleep(interval_s)
    except TimeoutError as exc:
        name = what or getattr(check, "__qualname__", repr(check))
        raise TimeoutError(f"{name} did not hold within {ceiling_s:g}s") from exc

"""Stopping a background task we own: cancel it, wait for it to end, and never swallow our own
cancellation.

``await task`` after ``task.cancel()`` raises ``CancelledError`` — ours, from the cancel, which the
caller means to absorb. But when the caller is itself being cancelled at that moment the error is
also the caller's, and swallowing it would lose that cancellation (STYLE: cancellation is never
swallowed). ``cancel_and_wait`` tells the two apart with ``Task.cancelling()``.
"""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[object]) -> None:
    """Cancel ``task`` and wait until it has ended; re-raise only the caller's cancellation."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise

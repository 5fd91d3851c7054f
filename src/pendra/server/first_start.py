"""The control plane's first start: the first owner (console user ``admin``) with its password, and
a first API key (the owner's), made once.

Rules: ``first_start`` creates both in one transaction the first time it finds no console user
in the store, and returns them so the caller prints them at once (``announce``); every later call
returns None and changes nothing. ``pendra server`` and ``pendra up`` both use it. The secrets are
printed, never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pendra.server.store import admin, keys
from pendra.server.store.db import Store

FIRST_KEY_NAME = "default"


@dataclass(frozen=True)
class FirstStart:
    admin_password: str
    api_key: str

    def announce(self, announce: Callable[[str], None]) -> None:
        """Print both secrets, once, the way the operator is told to save them."""
        announce("First start: save these now, they are shown only once.")
        announce("  Console user:   admin (owner)")
        announce(f"  Admin password: {self.admin_password}")
        announce(f"  API key:        {self.api_key}")


async def first_start(store: Store) -> FirstStart | None:
    """Create the admin password and a first API key if there is no admin yet; else None."""
    async with store.session() as session:
        password = await admin.ensure_admin(session)
        if password is None:
            return None
        _, raw_key = await keys.create_key(session, FIRST_KEY_NAME)
        await session.commit()
    return FirstStart(password, raw_key)

"""Who may do what: the two roles of console users, and the actor behind each admin request.

Rules:
- An **owner** may do everything. A **member** may use the API, see models, workers and their
  own usage, and create and revoke their own API keys (with the organisation's default limits).
  Everything else — enrolling and removing workers, installing and removing models, other
  people's keys, key limits, users, the audit log — is owner-only.
- ``require_owner`` is the one check: it raises Forbidden (403) with a message naming the role
  needed and the action ("only an owner may add workers"). The console's forms and the admin API
  call it server-side on every change; hiding a button is only a courtesy.
- The per-start admin token (``pendra`` CLI on the control-plane host) acts as an owner named
  ``admin token``; the CLI writing the store directly acts as ``cli``.
"""

from __future__ import annotations

from pendra.errors import Forbidden
from pendra.server.sessions import Session
from pendra.server.store.audit import Actor
from pendra.server.store.users import MEMBER, OWNER

__all__ = ["ADMIN_TOKEN", "CLI", "MEMBER", "OWNER", "OwnerOnly", "actor_of", "require_owner"]


class OwnerOnly(Forbidden):
    """A member asked for something only an owner may do (403; the console shows a page)."""


ADMIN_TOKEN = "admin token"
CLI = Actor("cli", OWNER, None, "local")


def actor_of(session: Session, address: str) -> Actor:
    """The console user behind ``session``, acting from ``address``."""
    return Actor(session.user_name, session.role, session.user_id, address)


def require_owner(who: Actor | Session, what: str) -> None:
    """403 unless ``who`` is an owner; ``what`` completes "only an owner may …"."""
    if who.role != OWNER:
        raise OwnerOnly(f"only an owner may {what}; you are signed in as a {who.role or MEMBER}")

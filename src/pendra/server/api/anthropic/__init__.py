"""Anthropic's Messages API (``/v1/messages``), translated at the edge to the internal chat.

schema.py checks the request, translate.py maps it to the internal chat body and the answer back
(pure functions), events.py is the ``Dialect`` with its event stream and Anthropic's error
envelope, routes.py the two routes. ``ERROR_PATHS`` below each API prefix answer every error in
Anthropic's envelope.
"""

from __future__ import annotations

from pendra.server.api.anthropic.events import error_body, error_status
from pendra.server.api.anthropic.routes import router
from pendra.server.errors import register_error_shape

ERROR_PATH = "/messages"


def register_errors(prefix: str) -> None:
    """Errors under ``prefix`` + ``/messages`` take Anthropic's envelope and statuses."""
    register_error_shape(prefix + ERROR_PATH, error_body, error_status)


__all__ = ["router", "register_errors"]

"""The OpenAI Responses API (``/responses``), answered by the workers' chat.

Modules: ``schema`` (the typed request), ``translate`` (request → internal chat body, chat
answer → Response, no I/O), ``events`` (the Responses event stream from chat chunks),
``dialect`` (the relay's ``Dialect``: whole answers, streams, storing), ``routes`` (the HTTP
routes). Stored responses live in ``server/store/responses.py``.
"""

from pendra.server.api.responses.routes import router

__all__ = ["router"]

"""The public HTTP API, one router per resource.

``mount_api(app)`` puts every route at ``/api/v1/...`` (documented in the OpenAPI schema) and again
at ``/v1/...`` (same handlers, left out of the schema), so SDKs configured with either base URL
work. The admin-only routes (``installs``, ``keys``, ``usage``, ``users``) live under ``/api/v1`` only.
"""

from __future__ import annotations

from fastapi import FastAPI

from pendra.server.api import (anthropic, audio, catalogue, chat, completions, embeddings,
                               images, installs, keys, models, responses, status, usage, users)

API_PREFIX = "/api/v1"
ALIAS_PREFIX = "/v1"
PUBLIC_ROUTERS = (chat.router, completions.router, embeddings.router, images.router, audio.router,
                  models.router, catalogue.router, status.router, responses.router,
                  anthropic.router)


def mount_api(app: FastAPI) -> None:
    for prefix, documented in ((API_PREFIX, True), (ALIAS_PREFIX, False)):
        for router in PUBLIC_ROUTERS:
            app.include_router(router, prefix=prefix, include_in_schema=documented)
        anthropic.register_errors(prefix)
    app.include_router(installs.router, prefix=API_PREFIX)
    app.include_router(keys.router, prefix=API_PREFIX)
    app.include_router(usage.router, prefix=API_PREFIX)
    app.include_router(users.router, prefix=API_PREFIX)

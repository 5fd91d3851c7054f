"""``GET /metrics``: the control plane's Prometheus metrics (server/metrics.py owns what they are).

Rules:
- Served at the root, not under ``/api/v1``: it is for Prometheus, not for API clients, and is
  left out of the OpenAPI schema.
- Readers present ``Authorization: Bearer <metrics_token>`` (config ``metrics_token`` /
  ``PENDRA_METRICS_TOKEN``, the one Prometheus is given) or this start's admin token (the local
  CLI's, from server.yaml). API keys and console sessions do not read it: a key holder is a
  client, and the fleet's shape is the operator's business. Anything else is 401 with
  ``WWW-Authenticate: Bearer``; tokens are compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pendra.config import ServerSettings
from pendra.errors import Unauthorized
from pendra.server.admin_auth import bearer_token, is_admin_token
from pendra.server.deps import MetricsDep, SettingsDep
from pendra.server.errors import error_response, request_id_of
from pendra.server.metrics import CONTENT_TYPE

router = APIRouter(include_in_schema=False)

METRICS_HINT = ("send `Authorization: Bearer <metrics_token>` (set metrics_token in config.yaml "
                "or PENDRA_METRICS_TOKEN)")


# What a refused reader is told to send (RFC 6750).
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pendra-metrics"'}


def refusal(settings: ServerSettings, token: str) -> str | None:
    """Why ``token`` may not read the metrics, or None when it is the metrics token or this
    start's admin token."""
    expected = settings.metrics_token
    if token and expected and hmac.compare_digest(token.encode(), expected.encode()):
        return None
    if token and is_admin_token(settings, token):
        return None
    if not token:
        return f"/metrics needs a token: {METRICS_HINT}"
    return f"/metrics refused the token: {METRICS_HINT}"


@router.get("/metrics")
async def get_metrics(request: Request, settings: SettingsDep, metrics: MetricsDep) -> Response:
    refused = refusal(settings, bearer_token(request))
    if refused is not None:
        return error_response(Unauthorized.status, refused, Unauthorized.kind,
                              request_id_of(request.scope), CHALLENGE)
    return Response(metrics.render(), media_type=CONTENT_TYPE)

"""Usage, administered over HTTP (admin only): ``GET /usage/export`` downloads the usage records
of a period as CSV (server/usage_csv.py owns the format).

``since`` and ``until`` are ISO 8601 times (a time without a zone is UTC); either may be left out
for an open end. The period is [since, until). The console's Usage page links here for its own
period, riding on the session cookie (a GET needs no CSRF token). A member's export holds only
the requests made with their own keys (server/roles.py); an owner's and the admin token's, all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from pendra.errors import InvalidRequest
from pendra.server import usage_csv
from pendra.server.admin_auth import Admin
from pendra.server.deps import StoreDep
from pendra.server.store.usage import EXPORT_COLUMNS

router = APIRouter(tags=["usage"])


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@router.get("/usage/export", summary="Usage records of a period as CSV (admin)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}},
                             "description": "One row per request: " +
                             ", ".join(EXPORT_COLUMNS)}})
async def export_usage(store: StoreDep, admin: Admin,
                       since: Annotated[datetime | None, Query(
                           description="Start of the period, ISO 8601 (inclusive)")] = None,
                       until: Annotated[datetime | None, Query(
                           description="End of the period, ISO 8601 (exclusive)")] = None
                       ) -> StreamingResponse:
    start, end = _utc(since), _utc(until)
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("until must come after since", param="until")
    return StreamingResponse(
        usage_csv.export(store, start, end, user_id=None if admin.is_owner else admin.user_id),
        media_type=usage_csv.MEDIA_TYPE,
        headers={"Content-Disposition":
                 f'attachment; filename="{usage_csv.filename(start, end)}"',
                 "Cache-Control": "no-store"})

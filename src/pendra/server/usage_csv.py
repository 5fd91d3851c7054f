"""Usage records as CSV, for ``GET /api/v1/usage/export``, the console's download link and
``pendra usage --csv``: one writer, so every export has the same columns and formatting.

Rules:
- The columns are the usage record's own (``store.usage.EXPORT_COLUMNS``), in that order, with a
  header row: who, what, where, how long and how it ended. No prompt or completion is stored, so
  none can be exported.
- Times are ISO 8601 in UTC with a ``Z``; ``stream`` is ``true``/``false``; a missing value is an
  empty cell. Lines end in CRLF (RFC 4180).
- A text cell a client chose (the model it asked for, an error message) that starts with ``=``,
  ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``, so a spreadsheet opening
  the file shows it as text instead of running it as a formula (OWASP's CSV injection advice).
- Rows are produced a batch at a time (``store.usage.export_rows``); nothing holds a whole export.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from pendra.server.store import usage as usage_store
from pendra.server.store.db import Store
from pendra.server.store.tables import Usage

MEDIA_TYPE = "text/csv; charset=utf-8"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_STARTS) else value
    return str(value)


def _lines(rows: Iterable[Iterable[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buffer.getvalue()


def header() -> str:
    return _lines([usage_store.EXPORT_COLUMNS])


def lines(batch: Iterable[Usage]) -> str:
    return _lines([getattr(row, column) for column in usage_store.EXPORT_COLUMNS]
                  for row in batch)


async def export(store: Store, since: datetime | None, until: datetime | None, *,
                 user_id: str | None = None) -> AsyncIterator[str]:
    """The CSV of the records in [since, until) (of ``user_id``'s keys when given): the header,
    then a chunk per batch."""
    yield header()
    async with store.session() as session:
        async for batch in usage_store.export_rows(session, since, until, user_id=user_id):
            yield lines(batch)


def filename(since: datetime | None, until: datetime | None) -> str:
    """``pendra-usage-20261201T0000Z-20261208T0000Z.csv`` (``start``/``now`` for open ends)."""
    def stamp(moment: datetime | None, open_end: str) -> str:
        return moment.astimezone(UTC).strftime("%Y%m%dT%H%MZ") if moment else open_end

    return f"pendra-usage-{stamp(since, 'start')}-{stamp(until, 'now')}.csv"

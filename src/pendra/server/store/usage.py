"""Usage records: one row per API request, and the summaries the CLI and console show.

Rules:
- A record holds who, what, where, how long and how it ended, never prompt or completion content.
  Client-supplied strings (model names, request ids, error reasons) are clipped to their columns.
- Summaries aggregate in SQL, in constructs SQLite and PostgreSQL share: ``count``, ``sum``,
  ``avg``, ``CASE``, and the median as one ``ORDER BY … LIMIT 1 OFFSET`` (nearest rank).
- Time series (``usage_series``) bucket in SQL too, one grouped query: whole epoch seconds minus
  the window start, integer-divided by the bucket length (each dialect's epoch function).
- An error is any request that ended with an HTTP status of 400 or more; a request is *served*
  otherwise. Errors are also counted by class (``FAILURE_CLASSES``): the client's own mistakes
  (4xx), the client closing the connection before the answer (499, nginx's convention) and the
  fleet's failures (5xx: no capacity, a worker or backend failing).
- Latency figures (percentiles and averages) are over served requests only: a refused request
  answers in a millisecond, and counting it would make a failing fleet look fast. Percentiles are
  nearest-rank (the value at rank ceil(p × n)), each one ``ORDER BY … LIMIT 1 OFFSET`` query.
- Every read takes an optional ``user_id``: then only requests made with that user's keys count
  (a member's view of the Usage page and of the export).
- ``export_rows`` reads a period's records in id order, ``EXPORT_BATCH`` rows a query (keyset
  paging), so an export of millions of rows holds one batch in memory at a time.
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (BigInteger, ColumnElement, Integer, Select, case, cast, func, insert,
                        select)
from sqlalchemy.ext.asyncio import AsyncSession

from pendra.errors import InvalidRequest
from pendra.server.store.tables import (MODEL_MAX_CHARS, NAME_MAX_CHARS, REQUEST_ID_MAX_CHARS,
                                        USAGE_ERROR_MAX_CHARS, USAGE_KINDS, ApiKey, Usage,
                                        usage_kind_label, utcnow)

ERROR_STATUS = 400
RECENT_MAX = 1000
EXPORT_BATCH = 1000
PERCENTILES = (50, 95, 99)
# Failure classes, in the order they are shown: name, label, and the statuses they hold.
FAILURE_CLASSES: tuple[tuple[str, str, int, int], ...] = (
    ("client_errors", "client errors (4xx)", 400, 498),
    ("client_closed", "client closed (499)", 499, 499),
    ("server_errors", "server errors (5xx)", 500, 599),
)
# What a breakdown shows for a group with no name: no model was served (the request failed before
# a worker answered), no key (refused before authentication), no worker.
NONE_LABELS = {"model": "(none served)", "key": "(no key)", "worker": "(no worker)", "kind": "—"}


def failure_class(status: int) -> str | None:
    """The failure class of ``status`` (None for a served request)."""
    for name, _, low, high in FAILURE_CLASSES:
        if low <= status <= high:
            return name
    return None


@dataclass(frozen=True, kw_only=True)
class UsageRecord:
    """What the API layer knows about one finished request."""

    request_id: str
    kind: str
    model_requested: str
    status: int
    latency_ms: int
    key_id: str | None = None
    model_served: str | None = None
    worker_id: str | None = None
    worker_name: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stream: bool = False
    error: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    # Not stored: for the metrics only (server/metrics.py). A streamed request's time from arrival
    # to the first frame of its answer.
    first_token_ms: int | None = None


def _clip(value: str | None, limit: int) -> str | None:
    return value if value is None or len(value) <= limit else value[: limit - 1] + "…"


def _values(rec: UsageRecord) -> dict[str, Any]:
    if rec.kind not in USAGE_KINDS:
        raise InvalidRequest(f"unknown usage kind {rec.kind!r}; one of {sorted(USAGE_KINDS)}")
    return dict(
        created_at=rec.created_at, request_id=_clip(rec.request_id, REQUEST_ID_MAX_CHARS),
        key_id=rec.key_id, kind=rec.kind,
        model_requested=_clip(rec.model_requested, MODEL_MAX_CHARS),
        model_served=_clip(rec.model_served, MODEL_MAX_CHARS), worker_id=rec.worker_id,
        worker_name=_clip(rec.worker_name, NAME_MAX_CHARS), status=rec.status,
        prompt_tokens=max(rec.prompt_tokens, 0), completion_tokens=max(rec.completion_tokens, 0),
        latency_ms=max(rec.latency_ms, 0), stream=rec.stream,
        error=_clip(rec.error, USAGE_ERROR_MAX_CHARS))


async def record_usage(session: AsyncSession, rec: UsageRecord) -> Usage:
    row = Usage(**_values(rec))
    session.add(row)
    await session.flush()
    return row


async def record_usages(session: AsyncSession, records: list[UsageRecord]) -> None:
    """Insert many records in one statement (an executemany): ~30 times less work a row than a
    flush per record. All or none: one bad record fails the statement."""
    if records:
        await session.execute(insert(Usage), [_values(rec) for rec in records])


async def recent_usage(session: AsyncSession, limit: int = 50, *,
                       user_id: str | None = None) -> list[Usage]:
    """The latest ``limit`` records, newest first."""
    if not 1 <= limit <= RECENT_MAX:
        raise InvalidRequest(f"limit must be between 1 and {RECENT_MAX}")
    rows = await session.scalars(_of_user(
        select(Usage).order_by(Usage.created_at.desc(), Usage.id.desc()), user_id).limit(limit))
    return list(rows)


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _measures() -> list[ColumnElement[Any]]:
    return [
        func.count().label("requests"),
        _count_where(Usage.status >= ERROR_STATUS).label("errors"),
        *(_count_where(Usage.status.between(low, high)).label(name)
          for name, _, low, high in FAILURE_CLASSES),
        func.coalesce(func.sum(Usage.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(Usage.completion_tokens), 0).label("completion_tokens"),
        # avg ignores NULLs: failed requests take no part in the latency figures.
        func.avg(case((Usage.status < ERROR_STATUS, Usage.latency_ms))).label("latency_avg_ms"),
    ]


def _of_user(stmt: Select[Any], user_id: str | None) -> Select[Any]:
    """``stmt`` limited to requests made with ``user_id``'s keys (all when None)."""
    if user_id is None:
        return stmt
    return stmt.where(Usage.key_id.in_(select(ApiKey.id).where(ApiKey.user_id == user_id)))


def _since(stmt: Select[Any], since: datetime | None, until: datetime | None = None,
           user_id: str | None = None) -> Select[Any]:
    """``stmt`` limited to the records of [since, until) (either end open), of ``user_id``'s
    keys when given."""
    stmt = _of_user(stmt, user_id)
    if since is not None:
        stmt = stmt.where(Usage.created_at >= since)
    return stmt if until is None else stmt.where(Usage.created_at < until)


def _numbers(row: Any) -> dict[str, Any]:
    avg = row.latency_avg_ms
    return {"requests": int(row.requests), "served": int(row.requests) - int(row.errors),
            "errors": int(row.errors),
            **{name: int(getattr(row, name)) for name, *_ in FAILURE_CLASSES},
            "prompt_tokens": int(row.prompt_tokens),
            "completion_tokens": int(row.completion_tokens),
            "latency_avg_ms": None if avg is None else round(float(avg), 1)}


async def _breakdown(session: AsyncSession, since: datetime | None, label: str,
                     *group: ColumnElement[Any], outer_key: bool = False,
                     until: datetime | None = None,
                     user_id: str | None = None) -> list[dict[str, Any]]:
    stmt = select(*group, *_measures()).select_from(Usage)
    if outer_key:
        stmt = stmt.outerjoin(ApiKey, ApiKey.id == Usage.key_id)
    stmt = _since(stmt, since, until, user_id).group_by(*group).order_by(func.count().desc(), *group)
    rows = (await session.execute(stmt)).all()
    out: list[dict[str, Any]] = []
    for row in rows:
        names = {label: row[0]} if len(group) == 1 else {f"{label}_id": row[0], label: row[1]}
        out.append(names | _numbers(row))
    return out


def nearest_rank(percentile: int, count: int) -> int:
    """The 0-based index of the ``percentile``-th value of ``count`` sorted values."""
    return max(math.ceil(percentile * count / 100) - 1, 0)


async def _served_latency(session: AsyncSession, since: datetime | None, until: datetime | None,
                          served: int, user_id: str | None = None) -> dict[str, int | None]:
    """``latency_p50_ms`` … of the served requests (None each when none was served)."""
    stmt = (_since(select(Usage.latency_ms), since, until, user_id).where(Usage.status < ERROR_STATUS)
            .order_by(Usage.latency_ms))
    out: dict[str, int | None] = {}
    for p in PERCENTILES:
        out[f"latency_p{p}_ms"] = None if served == 0 else await session.scalar(
            stmt.limit(1).offset(nearest_rank(p, served)))
    return out


async def usage_summary(session: AsyncSession, since: datetime | None,
                        until: datetime | None = None, *,
                        user_id: str | None = None) -> dict[str, Any]:
    """Totals and per-model, per-key, per-worker and per-kind breakdowns of the records of
    [since, until) (``until`` open by default).

    ``{"since", "until", "totals": {requests, served, errors, client_errors, client_closed,
    server_errors, prompt_tokens, completion_tokens, latency_p50_ms, latency_p95_ms,
    latency_p99_ms, latency_avg_ms}, "failures": [...], "per_model": [...], "per_key": [...],
    "per_worker": [...], "per_kind": [...]}``; each breakdown row has the same numbers (no
    percentiles) and its group's name (None for requests with no key, no model served or no
    worker), busiest first. Latency figures are over served requests only (None when none was
    served).
    """
    if since is not None and until is not None and until <= since:
        raise InvalidRequest("the end of the period must come after its start")
    totals_row = (await session.execute(_since(select(*_measures()), since, until,
                                               user_id))).one()
    totals = _numbers(totals_row)
    avg = totals.pop("latency_avg_ms")
    totals |= (await _served_latency(session, since, until, totals["served"], user_id)
               | {"latency_avg_ms": avg})
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "totals": totals,
        "failures": await failures_by_status(session, since, until, user_id=user_id),
        "per_model": await _breakdown(session, since, "model", Usage.model_served, until=until,
                                      user_id=user_id),
        "per_key": await _breakdown(session, since, "key", Usage.key_id, ApiKey.name,
                                    outer_key=True, until=until, user_id=user_id),
        "per_worker": await _breakdown(session, since, "worker", Usage.worker_name,
                                       until=until, user_id=user_id),
        "per_kind": await per_kind(session, since, until, user_id=user_id),
    }


async def failures_by_status(session: AsyncSession, since: datetime | None,
                             until: datetime | None = None, *,
                             user_id: str | None = None) -> list[dict[str, Any]]:
    """Failed requests per status (``status``, ``class``, ``requests``), commonest first."""
    stmt = (_since(select(Usage.status, func.count().label("requests")), since, until, user_id)
            .where(Usage.status >= ERROR_STATUS).group_by(Usage.status)
            .order_by(func.count().desc(), Usage.status))
    return [{"status": int(row.status), "class": failure_class(int(row.status)),
             "requests": int(row.requests)} for row in (await session.execute(stmt)).all()]


EXPORT_COLUMNS = ("created_at", "request_id", "key_id", "kind", "model_requested",
                  "model_served", "worker_id", "worker_name", "status", "prompt_tokens",
                  "completion_tokens", "latency_ms", "stream", "error")


async def export_rows(session: AsyncSession, since: datetime | None,
                      until: datetime | None, *,
                      user_id: str | None = None) -> AsyncIterator[list[Usage]]:
    """The records with ``since <= created_at < until`` (either end open), oldest first, in
    batches of at most ``EXPORT_BATCH``."""
    if since is not None and until is not None and until <= since:
        raise InvalidRequest("the end of the period must come after its start")
    after = 0
    while True:
        stmt = _since(select(Usage), since, until, user_id).where(Usage.id > after)
        batch = list(await session.scalars(stmt.order_by(Usage.id).limit(EXPORT_BATCH)))
        if not batch:
            return
        yield batch
        after = batch[-1].id


async def per_kind(session: AsyncSession, since: datetime | None,
                   until: datetime | None = None, *,
                   user_id: str | None = None) -> list[dict[str, Any]]:
    """Requests, errors and tokens per usage kind — the API or dialect a request came in by
    (chat, completions, embed, ...; each row's ``label`` is its readable name), busiest first."""
    rows = await _breakdown(session, since, "kind", Usage.kind, until=until, user_id=user_id)
    return [{**row, "label": usage_kind_label(row["kind"])} for row in rows]


def _epoch_seconds(dialect: str) -> ColumnElement[int]:
    if dialect == "sqlite":  # stored as naive UTC text; strftime('%s') reads it as UTC
        return cast(func.strftime("%s", Usage.created_at), Integer)
    return cast(func.floor(func.extract("epoch", Usage.created_at)), BigInteger)


async def usage_series(session: AsyncSession, since: datetime, bucket_s: int,
                       buckets: int, *, user_id: str | None = None) -> list[dict[str, Any]]:
    """``buckets`` buckets of ``bucket_s`` seconds from ``since``, one dict each (empty ones too):
    its start, requests, errors, prompt/completion tokens, and the served requests' latency
    average and maximum (None when none was served)."""
    dialect = (await session.connection()).dialect.name
    bucket = ((_epoch_seconds(dialect) - int(since.timestamp())) // bucket_s).label("bucket")
    served_latency = case((Usage.status < ERROR_STATUS, Usage.latency_ms))
    stmt = (select(bucket, *_measures(), func.max(served_latency).label("latency_max_ms"))
            .where(Usage.created_at >= since).group_by(bucket))
    stmt = _of_user(stmt, user_id)
    found = {int(row.bucket): row for row in (await session.execute(stmt)).all()}
    out = []
    for index in range(buckets):
        row = found.get(index)
        out.append({
            "start": since + timedelta(seconds=index * bucket_s),
            "requests": int(row.requests) if row else 0,
            "errors": int(row.errors) if row else 0,
            "prompt_tokens": int(row.prompt_tokens) if row else 0,
            "completion_tokens": int(row.completion_tokens) if row else 0,
            "latency_avg_ms": (None if row is None or row.latency_avg_ms is None
                               else float(row.latency_avg_ms)),
            "latency_max_ms": (None if row is None or row.latency_max_ms is None
                               else int(row.latency_max_ms)),
        })
    return out


async def key_usage_since(session: AsyncSession, since: datetime) -> dict[str, tuple[int, int]]:
    """Per API key since ``since``: requests admitted (a 429 or 403 refusal of the key's limits is
    not counted) and tokens used (prompt + completion)."""
    rows = await session.execute(
        select(Usage.key_id, func.count(),
               func.coalesce(func.sum(Usage.prompt_tokens + Usage.completion_tokens), 0))
        .where(Usage.created_at >= since, Usage.key_id.is_not(None),
               Usage.status.not_in((403, 429)))
        .group_by(Usage.key_id))
    return {key_id: (int(count), int(tokens)) for key_id, count, tokens in rows}

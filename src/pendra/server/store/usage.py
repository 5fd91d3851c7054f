"""Usage records: one row per API request, and the summaries the CLI and console show.

Rules:
- A record holds who, what, where, how long and how it ended, never prompt or completion content.
  Client-supplied strings (model names, request ids, error reasons) are clipped to their columns.
- Summaries aggregate in SQL, in constructs SQLite and PostgreSQL share: ``count``, ``sum``,
  ``avg``, ``CASE``, and the median as one ``ORDER BY … LIMIT 1 OFFSET`` (nearest rank).
- Time series (``usage_series``) bucket in SQL too, one grouped query: whole epoch seconds minus
  the window start, integer-divided by the bucket length (each dialect's epoch function).
- An error is any request that ended with an HTTP status of 400 or more.
- Functions flush but do not commit; the caller owns the transaction.
"""

from __future__ import annotations

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


async def recent_usage(session: AsyncSession, limit: int = 50) -> list[Usage]:
    """The latest ``limit`` records, newest first."""
    if not 1 <= limit <= RECENT_MAX:
        raise InvalidRequest(f"limit must be between 1 and {RECENT_MAX}")
    rows = await session.scalars(
        select(Usage).order_by(Usage.created_at.desc(), Usage.id.desc()).limit(limit))
    return list(rows)


def _measures() -> list[ColumnElement[Any]]:
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(case((Usage.status >= ERROR_STATUS, 1), else_=0)), 0)
        .label("errors"),
        func.coalesce(func.sum(Usage.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(Usage.completion_tokens), 0).label("completion_tokens"),
        func.avg(Usage.latency_ms).label("latency_avg_ms"),
    ]


def _since(stmt: Select[Any], since: datetime | None) -> Select[Any]:
    return stmt if since is None else stmt.where(Usage.created_at >= since)


def _numbers(row: Any) -> dict[str, Any]:
    avg = row.latency_avg_ms
    return {"requests": int(row.requests), "errors": int(row.errors),
            "prompt_tokens": int(row.prompt_tokens),
            "completion_tokens": int(row.completion_tokens),
            "latency_avg_ms": None if avg is None else round(float(avg), 1)}


async def _breakdown(session: AsyncSession, since: datetime | None, label: str,
                     *group: ColumnElement[Any], outer_key: bool = False) -> list[dict[str, Any]]:
    stmt = select(*group, *_measures()).select_from(Usage)
    if outer_key:
        stmt = stmt.outerjoin(ApiKey, ApiKey.id == Usage.key_id)
    stmt = _since(stmt, since).group_by(*group).order_by(func.count().desc(), *group)
    rows = (await session.execute(stmt)).all()
    out: list[dict[str, Any]] = []
    for row in rows:
        names = {label: row[0]} if len(group) == 1 else {f"{label}_id": row[0], label: row[1]}
        out.append(names | _numbers(row))
    return out


async def _median_latency(session: AsyncSession, since: datetime | None, count: int) -> int | None:
    if count == 0:
        return None
    stmt = _since(select(Usage.latency_ms), since).order_by(Usage.latency_ms)
    return await session.scalar(stmt.limit(1).offset((count - 1) // 2))


async def usage_summary(session: AsyncSession, since: datetime | None) -> dict[str, Any]:
    """Totals and per-model, per-key and per-worker breakdowns of the records since ``since``.

    ``{"since", "totals": {requests, errors, prompt_tokens, completion_tokens, latency_p50_ms,
    latency_avg_ms}, "per_model": [...], "per_key": [...], "per_worker": [...], "per_kind":
    [...]}``; each
    breakdown row has the same numbers (no p50) and its group's name (None for requests with no
    key, no model served or no worker), busiest first.
    """
    totals_row = (await session.execute(_since(select(*_measures()), since))).one()
    totals = _numbers(totals_row)
    p50 = await _median_latency(session, since, totals["requests"])
    avg = totals.pop("latency_avg_ms")
    totals |= {"latency_p50_ms": p50, "latency_avg_ms": avg}
    return {
        "since": since.isoformat() if since else None,
        "totals": totals,
        "per_model": await _breakdown(session, since, "model", Usage.model_served),
        "per_key": await _breakdown(session, since, "key", Usage.key_id, ApiKey.name,
                                    outer_key=True),
        "per_worker": await _breakdown(session, since, "worker", Usage.worker_name),
        "per_kind": await per_kind(session, since),
    }


async def per_kind(session: AsyncSession, since: datetime | None) -> list[dict[str, Any]]:
    """Requests, errors and tokens per usage kind — the API or dialect a request came in by
    (chat, completions, embed, ...; each row's ``label`` is its readable name), busiest first."""
    rows = await _breakdown(session, since, "kind", Usage.kind)
    return [{**row, "label": usage_kind_label(row["kind"])} for row in rows]


def _epoch_seconds(dialect: str) -> ColumnElement[int]:
    if dialect == "sqlite":  # stored as naive UTC text; strftime('%s') reads it as UTC
        return cast(func.strftime("%s", Usage.created_at), Integer)
    return cast(func.floor(func.extract("epoch", Usage.created_at)), BigInteger)


async def usage_series(session: AsyncSession, since: datetime, bucket_s: int,
                       buckets: int) -> list[dict[str, Any]]:
    """``buckets`` buckets of ``bucket_s`` seconds from ``since``, one dict each (empty ones too):
    its start, requests, errors, prompt/completion tokens, latency average and maximum (None
    when empty)."""
    dialect = (await session.connection()).dialect.name
    bucket = ((_epoch_seconds(dialect) - int(since.timestamp())) // bucket_s).label("bucket")
    stmt = (select(bucket, *_measures(), func.max(Usage.latency_ms).label("latency_max_ms"))
            .where(Usage.created_at >= since).group_by(bucket))
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
            "latency_avg_ms": float(row.latency_avg_ms) if row and row.requests else None,
            "latency_max_ms": int(row.latency_max_ms) if row and row.requests else None,
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

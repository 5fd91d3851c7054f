"""The console's pages: one view per page gathers a plain dict, then renders it last.

Rules: each ``*_page`` function is given the store, the hub, the installs service or the catalogue
it reads (the routes get them through server/deps.py) and returns only plain values (dicts, lists,
strings, numbers, datetimes) for its template; the route around it does nothing but call it and
``render``. Nothing here changes state; the forms on these pages post to ``actions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pendra.catalogue.installable import SOURCES, installable_kinds
from pendra.server.installs import BACKEND_NAMES, can_do, lifecycle_note
from pendra.catalogue.loader import Catalogue
from pendra.names import name_key
from pendra.server.console import usage_charts
from pendra.server.console.auth import ConsoleSession
from pendra.server.console.rendering import PageDep, size
from pendra.server.deps import (CatalogueDep, CurrentSession, HubDep, InstallsDep, LimiterDep,
                                SettingsDep, StoreDep)
from pendra.server.hub import Hub
from pendra.server.installs import Installs
from pendra.server.limits import KeyLimits
from pendra.server.public_url import public_base
from pendra.server.roles import require_owner
from pendra.server.sessions import Session
from pendra.server.store import audit as audit_store
from pendra.server.store import keys as key_store
from pendra.server.store import users as user_store
from pendra.server.store import usage as usage_store
from pendra.server.store import workers as worker_store
from pendra.server.store.db import Store

router = APIRouter(include_in_schema=False)

# The installs panel shows every running install and at most this many finished ones.
RECENT_INSTALLS = 6
RECENT_REQUESTS = 50
AUDIT_ROWS = 500


# --- shared reads ---------------------------------------------------------------------------------


SOURCE_OF = {kind: source for kind, (source, _, _) in SOURCES.items()}


def model_row(info: Any) -> dict[str, Any]:
    return {"id": info.id, "backend": info.backend, "context_length": info.context_length,
            "capabilities": list(info.capabilities), "parameter_size": info.parameter_size,
            "quantization_level": info.quantization_level, "family": info.family,
            "format": info.format, "size": info.size}


def install_view(snapshot: dict[str, Any]) -> dict[str, Any]:
    """An install snapshot plus what the progress bar shows; SSE sends the same shape."""
    state = snapshot["state"]
    percent = snapshot.get("percent")
    done_bytes, total = snapshot.get("completed") or 0, snapshot.get("total") or 0
    if state == "succeeded":
        label = "Installed"
    elif state == "failed":
        label = snapshot.get("error") or "Failed"
    elif state == "cancelled":
        label = "Cancelled"
    elif total:
        label = f"{snapshot.get('status_text') or 'pulling'} · {size(done_bytes)} of {size(total)}"
    else:
        label = (snapshot.get("status_text") or state).capitalize()
    return snapshot | {
        "active": state in ("queued", "running"),
        "bar": 100.0 if state == "succeeded" else float(percent or 0),
        "percent_text": "100%" if state == "succeeded" else (
            f"{percent:.0f}%" if percent is not None else ""),
        "label": label,
    }


# --- pages ----------------------------------------------------------------------------------------


def sign_in_page(next_url: str, error: str | None = None, name: str = "") -> dict[str, Any]:
    return {"title": "Sign in", "next": safe_next(next_url), "error": error, "name": name}


def safe_next(url: str | None) -> str:
    """Only same-site paths: never an open redirect to another host."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/models"
    return url


async def models_page(hub: Hub, installs: Installs, catalogue: Catalogue, query: str,
                      capability: str) -> dict[str, Any]:
    connected = hub.connected()
    installing = {b.kind for w in connected for b in w.backends
                  if b.verified and can_do(b, "install")}
    where: dict[str, list[str]] = {}
    for worker in connected:
        for model_id in worker.models:
            where.setdefault(name_key(model_id), []).append(worker.name)
    needle = query.strip().lower()
    entries, capabilities = [], set()
    for entry in catalogue.entries:
        capabilities.add(entry.capability)
        haystack = " ".join([entry.id, entry.name, entry.description, entry.capability,
                             *entry.features, *entry.aliases]).lower()
        if (needle and needle not in haystack) or (capability and entry.capability != capability):
            continue
        kinds = installable_kinds(entry)
        variants = [{"id": v.id, "tag": v.ollama, "lmstudio": v.lmstudio,
                     "quantization": v.quantization, "size_bytes": v.size_bytes,
                     "backends": [k for k in kinds if SOURCE_OF[k](v)],
                     "installed_on": sorted(where.get(name_key(v.ollama), [])) if v.ollama else []}
                    for v in entry.variants]
        variant_tags = {name_key(v.ollama) for v in entry.variants if v.ollama}
        # Aliases (e.g. "llama3.2:latest" for "llama3.2:3b") are the same model under another name.
        also = sorted({(name, model_id) for model_id, names in where.items()
                       if model_id in entry.names() and model_id not in variant_tags
                       for name in names})
        entries.append({
            "id": entry.id, "name": entry.name, "backend": entry.backend,
            "capability": entry.capability, "features": list(entry.features),
            "parameter_size": entry.parameter_size, "context_length": entry.context_length,
            "licence": entry.licence, "description": entry.description, "variants": variants,
            "installable": bool(kinds), "kinds": kinds,
            # The kinds some connected worker can install into now: the backend picker's options.
            "target_kinds": [k for k in kinds if k in installing],
            "also_installed": [{"worker": name, "tag": model_id} for name, model_id in also],
        })
    snapshots = [s.to_dict() for s in await installs.list()]
    active = [s for s in snapshots if s["state"] in ("queued", "running")]
    finished = [s for s in snapshots if s["state"] not in ("queued", "running")]
    filters = urlencode({k: v for k, v in (("q", query), ("capability", capability)) if v})
    return {
        "title": "Models", "page": "models", "live": True,
        "query": query, "capability": capability, "capabilities": sorted(capabilities),
        "return_to": "/models" + (f"?{filters}" if filters else ""),
        "entries": entries, "catalogue_size": len(catalogue.entries),
        "targets": [{"id": w.id, "name": w.name,
                     "kinds": [b.kind for b in w.backends if b.verified and can_do(b, "install")]}
                    for w in connected
                    if any(b.verified and can_do(b, "install") for b in w.backends)],
        "backend_names": BACKEND_NAMES,
        "installs": [install_view(s) for s in active + finished[:RECENT_INSTALLS]],
        "fleet": [{"id": w.id, "name": w.name,
                   "removable": sorted(b.kind for b in w.backends
                                       if b.verified and can_do(b, "uninstall")),
                   "notes": {b.kind: lifecycle_note(b) for b in w.backends if b.verified},
                   "models": [model_row(m) for _, m in sorted(w.models.items())]}
                  for w in sorted(connected, key=lambda w: w.name)],
    }


async def workers_page(store: Store, hub: Hub, new_worker: dict[str, Any] | None = None,
                       error: str | None = None) -> dict[str, Any]:
    async with store.session() as db:
        enrolled = await worker_store.list_workers(db)
    live = {w.id: w for w in hub.connected()}
    rows = []
    for row in enrolled:
        view = live.get(row.id)
        rows.append({
            "id": row.id, "name": row.name, "created_at": row.created_at,
            "connected": view is not None,
            "connected_at": view.connected_at if view else None,
            "last_seen": view.last_seen if view else row.last_seen_at,
            "in_flight": view.in_flight if view else 0,
            "max_concurrent": view.max_concurrent if view else None,
            "backends": [{**b.to_dict(), "note": lifecycle_note(b) if b.verified else ""}
                         for b in view.backends] if view else [],
            "models": [model_row(m) for _, m in sorted(view.models.items())] if view else [],
        })
    rows.sort(key=lambda r: (not r["connected"], r["name"].lower()))
    return {"title": "Workers", "page": "workers", "live": new_worker is None,
            "workers": rows, "connected": sum(r["connected"] for r in rows),
            "new_worker": new_worker, "error": error}


async def keys_page(store: Store, base_url: str, session: Session,
                    new_key: dict[str, Any] | None = None, error: str | None = None,
                    defaults: KeyLimits | None = None) -> dict[str, Any]:
    """Owners see every key and whose it is; members see their own."""
    async with store.session() as db:
        rows = await key_store.list_keys(db, None if session.is_owner else session.user_id)
        owners = await key_store.owners(db)
        people = await user_store.list_users(db) if session.is_owner else []
    keys = [{"id": k.id, "name": k.name, "prefix": k.prefix, "created_at": k.created_at,
             "last_used_at": k.last_used_at, "revoked_at": k.revoked_at,
             "active": k.revoked_at is None, "limits": key_store.limits_of(k),
             "owner": owners.get(k.user_id or "", "—"),
             "mine": k.user_id == session.user_id} for k in rows]
    defaults_text = (defaults or KeyLimits()).describe()
    return {"title": "API keys", "page": "api-keys", "keys": keys,
            "users": [{"id": u.id, "name": u.name} for u in people if u.disabled_at is None],
            "me": session.user_id,
            "defaults_text": "no limits" if defaults_text == "none" else defaults_text,
            "api_base": base_url.rstrip("/") + "/api/v1",
            "active": sum(k["active"] for k in keys), "new_key": new_key, "error": error}


async def usage_page(store: Store, period: str, session: Session) -> dict[str, Any]:
    """Owners see everyone's usage; members only that of their own keys."""
    window = usage_charts.window(period, datetime.now(UTC))
    mine = None if session.is_owner else session.user_id
    async with store.session() as db:
        summary = await usage_store.usage_summary(db, window.since, user_id=mine)
        series = await usage_store.usage_series(db, window.since,
                                                int(window.bucket.total_seconds()), window.buckets,
                                                user_id=mine)
        recent = await usage_store.recent_usage(db, RECENT_REQUESTS, user_id=mine)
        key_owner = {k.id: k.user_id for k in await key_store.list_keys(db, mine)}
        owners = await key_store.owners(db)
    for row in summary["per_key"]:
        row["owner"] = owners.get(key_owner.get(row.get("key_id") or "") or "", "—")
    return {
        "title": "Usage", "page": "usage", "period": window.period, "own_only": mine is not None,
        "periods": list(usage_charts.PERIODS), "since": window.since,
        "totals": summary["totals"], "failures": summary["failures"],
        "failure_classes": [{"name": name, "label": label}
                            for name, label, *_ in usage_store.FAILURE_CLASSES],
        "none_labels": usage_store.NONE_LABELS,
        "export_url": "/api/v1/usage/export?" + urlencode(
            {"since": window.since.isoformat(timespec="seconds")}),
        "per_model": summary["per_model"],
        "per_key": summary["per_key"], "per_worker": summary["per_worker"],
        "per_kind": summary["per_kind"],
        "charts": usage_charts.charts(series, window),
        "recent": [{"created_at": r.created_at, "kind": r.kind,
                    "model_requested": r.model_requested, "model_served": r.model_served,
                    "worker_name": r.worker_name, "status": r.status,
                    "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                    "latency_ms": r.latency_ms, "stream": r.stream}
                   for r in recent if r.created_at >= window.since],
    }


def account_page(session: Session, error: str | None = None) -> dict[str, Any]:
    return {"title": "Account", "page": "account", "error": error, "name": session.user_name,
            "role": session.role, "must_change": session.must_change_password}


async def users_page(store: Store, session: Session, new_user: dict[str, Any] | None = None,
                     error: str | None = None) -> dict[str, Any]:
    async with store.session() as db:
        rows = await user_store.list_users(db)
        keys = await key_store.list_keys(db)
    live: dict[str, int] = {}
    for key in keys:
        if key.revoked_at is None and key.user_id:
            live[key.user_id] = live.get(key.user_id, 0) + 1
    users = [{"id": u.id, "name": u.name, "role": u.role, "created_at": u.created_at,
              "disabled": u.disabled_at is not None, "disabled_at": u.disabled_at,
              "must_change_password": u.must_change_password, "live_keys": live.get(u.id, 0),
              "me": u.id == session.user_id} for u in rows]
    return {"title": "Users", "page": "users", "users": users, "new_user": new_user,
            "error": error, "roles": ["member", "owner"]}


async def audit_page(store: Store, period: str) -> dict[str, Any]:
    window = usage_charts.window(period, datetime.now(UTC))
    async with store.session() as db:
        rows = await audit_store.list_audit(db, window.since, AUDIT_ROWS)
    return {"title": "Audit log", "page": "audit", "period": window.period,
            "periods": list(usage_charts.PERIODS), "since": window.since,
            "rows": [{"created_at": r.created_at, "actor": r.actor, "address": r.address,
                      "action": r.action, "target": r.target, "detail": r.detail} for r in rows],
            "limit": AUDIT_ROWS}


# --- routes ---------------------------------------------------------------------------------------


@router.get("/")
async def home(session: CurrentSession) -> Response:
    return RedirectResponse("/models" if session else "/sign-in", status_code=303)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in(page: PageDep, session: CurrentSession, next: str = "/models") -> Response:
    if session is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page.render("sign_in.html", sign_in_page(next))


@router.get("/models", response_class=HTMLResponse)
async def models(page: PageDep, session: ConsoleSession, hub: HubDep, installs: InstallsDep,
                 catalogue: CatalogueDep, q: str = "", capability: str = "") -> Response:
    return page.render("models.html", await models_page(hub, installs, catalogue, q, capability),
                       session=session)


@router.get("/workers", response_class=HTMLResponse)
async def workers(page: PageDep, session: ConsoleSession, store: StoreDep,
                  hub: HubDep) -> Response:
    return page.render("workers.html", await workers_page(store, hub), session=session)


@router.get("/api-keys", response_class=HTMLResponse)
async def api_keys(page: PageDep, session: ConsoleSession, store: StoreDep,
                   limiter: LimiterDep, settings: SettingsDep) -> Response:
    return page.render("api_keys.html", await keys_page(store, public_base(settings).url, session,
                                                        defaults=limiter.defaults),
                       session=session)


@router.get("/usage", response_class=HTMLResponse)
async def usage(page: PageDep, session: ConsoleSession, store: StoreDep,
                period: Annotated[str, Query(max_length=8)] = usage_charts.DEFAULT_PERIOD
                ) -> Response:
    return page.render("usage.html", await usage_page(store, period, session), session=session)


@router.get("/account", response_class=HTMLResponse)
async def account(page: PageDep, session: ConsoleSession) -> Response:
    return page.render("account.html", account_page(session), session=session)


@router.get("/users", response_class=HTMLResponse)
async def users(page: PageDep, session: ConsoleSession, store: StoreDep) -> Response:
    require_owner(session, "manage users")
    return page.render("users.html", await users_page(store, session), session=session)


@router.get("/audit", response_class=HTMLResponse)
async def audit(page: PageDep, session: ConsoleSession, store: StoreDep,
                period: Annotated[str, Query(max_length=8)] = usage_charts.DEFAULT_PERIOD
                ) -> Response:
    require_owner(session, "read the audit log")
    return page.render("audit.html", await audit_page(store, period), session=session)

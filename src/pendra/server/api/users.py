"""Console users and the audit log, administered over HTTP (owner only).

``GET /users`` lists users; ``POST /users`` adds one and returns their one-time password once
(``password``, with ``Cache-Control: no-store``); ``POST /users/disable``, ``/users/enable``,
``/users/remove`` and ``/users/role`` take the user's name or id in the body. ``GET /audit`` lists
audit rows newest first (``since``: an ISO 8601 time; ``limit``). The rules are server/people.py's
and server/roles.py's: a member gets 403 naming the owner role.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from pendra.server import people
from pendra.server.admin_auth import Admin
from pendra.server.deps import KeyIndexDep, StoreDep
from pendra.server.roles import require_owner
from pendra.server.store import audit as audit_store
from pendra.server.store.tables import NAME_MAX_CHARS, Audit, User

router = APIRouter(tags=["users"])
REF_MAX_CHARS = 4 * NAME_MAX_CHARS


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def user_public(row: User) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "role": row.role, "created_at": _iso(row.created_at),
            "disabled_at": _iso(row.disabled_at),
            "password_changed_at": _iso(row.password_changed_at),
            "must_change_password": row.must_change_password}


def audit_public(row: Audit) -> dict[str, Any]:
    return {"id": row.id, "created_at": _iso(row.created_at), "actor": row.actor,
            "user_id": row.user_id, "address": row.address, "action": row.action,
            "target": row.target, "detail": row.detail}


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=REF_MAX_CHARS, description="An email or a name")
    role: Literal["owner", "member"] = "member"


class UserRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=REF_MAX_CHARS, description="A user's name or id")


class UserRole(UserRef):
    role: Literal["owner", "member"]


@router.get("/users")
async def list_users(store: StoreDep, admin: Admin) -> dict[str, Any]:
    return {"object": "list", "data": [user_public(u) for u in await people.list_users(store, admin)]}


@router.post("/users", status_code=201)
async def add_user(body: UserCreate, store: StoreDep, response: Response,
                   admin: Admin) -> dict[str, Any]:
    row, password = await people.add_user(store, admin, body.name, body.role)
    response.headers["Cache-Control"] = "no-store"
    return user_public(row) | {"password": password}


@router.post("/users/disable")
async def disable_user(body: UserRef, store: StoreDep, keys: KeyIndexDep,
                       admin: Admin) -> dict[str, Any]:
    row, revoked = await people.set_disabled(store, keys, admin, body.user, True)
    return user_public(row) | {"revoked_keys": [k.id for k in revoked]}


@router.post("/users/enable")
async def enable_user(body: UserRef, store: StoreDep, keys: KeyIndexDep,
                      admin: Admin) -> dict[str, Any]:
    row, _ = await people.set_disabled(store, keys, admin, body.user, False)
    return user_public(row)


@router.post("/users/remove")
async def remove_user(body: UserRef, store: StoreDep, keys: KeyIndexDep,
                      admin: Admin) -> dict[str, Any]:
    row, revoked = await people.remove_user(store, keys, admin, body.user)
    return {"id": row.id, "name": row.name, "removed": True,
            "revoked_keys": [k.id for k in revoked]}


@router.post("/users/role")
async def set_role(body: UserRole, store: StoreDep, admin: Admin) -> dict[str, Any]:
    return user_public(await people.set_role(store, admin, body.user, body.role))


@router.get("/audit")
async def list_audit(store: StoreDep, admin: Admin, since: datetime | None = None,
                     limit: int = Query(200, ge=1, le=audit_store.LIST_MAX)) -> dict[str, Any]:
    require_owner(admin, "read the audit log")
    async with store.session() as db:
        rows = await audit_store.list_audit(db, since, limit)
    return {"object": "list", "data": [audit_public(r) for r in rows]}
